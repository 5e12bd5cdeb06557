"""The gatehouse benchmark harness: see docs/BENCHMARKS.md. Run it as `bench/run`.

It starts a fixed upstream (crates/bench-tools), gatehouse gateways in front of it, and nginx as
the reference proxy, all on loopback; runs wrk against every scenario in interleaved rounds
(A B C … A B C …) so that machine noise hits every scenario alike; reads each proxy's CPU time and
peak RSS from /proc; and writes results.json (every raw number), results.md and chart.png.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SMALL_BYTES = 69  # crates/bench-tools/src/bodies.rs SMALL
LARGE_BYTES = 64 * 1024
ROUTES_IN_LARGE_TABLE = 10_000
# Issue 14: the composed answer of two `/small` parts, `{"a":SMALL,"b":SMALL}` (the parts'
# members re-serialized compactly, the same length).
COMPOSED_BYTES = 2 * SMALL_BYTES + len('{"a":,"b":}')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    """A reason to stop, said plainly; the harness exits non-zero with it."""


# ---------------------------------------------------------------------------------------------
# Tools: nothing is installed unless --install says so.

@dataclass
class Tool:
    name: str
    present: callable
    apt: str | None = None
    pip: str | None = None

    def hint(self) -> str:
        if self.apt:
            return f"apt-get install -y {self.apt}"
        return f"python3 -m pip install {self.pip}"


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


TOOLS = [
    Tool("wrk", lambda: shutil.which("wrk") is not None, apt="wrk"),
    Tool("nginx", lambda: find_nginx() is not None, apt="nginx"),
    # The HTTPS scenarios' certificate (one, for gatehouse and nginx alike).
    Tool("openssl", lambda: shutil.which("openssl") is not None, apt="openssl"),
    Tool("matplotlib (Python)", has_matplotlib, pip="matplotlib"),
]


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def ensure_tools(install: bool) -> None:
    missing = [tool for tool in TOOLS if not tool.present()]
    if not missing:
        return
    if not install:
        lines = [f"  {tool.name}: {tool.hint()}" for tool in missing]
        raise HarnessError(
            "missing tools (bench/run installs nothing unless run with --install):\n"
            + "\n".join(lines)
        )
    apt = [tool.apt for tool in missing if tool.apt]
    pip = [tool.pip for tool in missing if tool.pip]
    if apt:
        say(f"installing with apt-get: {' '.join(apt)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run_checked(["apt-get", "update", "-qq"], env=env)
        run_checked(["apt-get", "install", "-y", "-qq", *apt], env=env)
    if pip:
        say(f"installing with pip: {' '.join(pip)}")
        run_checked([sys.executable, "-m", "pip", "install", "-q", *pip])
    still = [tool for tool in TOOLS if not tool.present()]
    if still:
        raise HarnessError("still missing after --install: " + ", ".join(t.name for t in still))


def run_checked(command: list[str], **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise HarnessError(
            f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Processes and what /proc says about them.

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Restarts VmHWM from the current RSS (proc(5), clear_refs value 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return values[0] + values[1] + values[2] + values[5] + values[6] + values[7]


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


@dataclass
class Service:
    """A process the harness started and stops; `pids()` are the ones whose CPU counts."""

    name: str
    process: subprocess.Popen
    log: Path
    address: str
    with_children: bool = False
    scheme: str = "http"

    def pids(self) -> list[int]:
        return [self.process.pid] + (children(self.process.pid) if self.with_children else [])

    def cpu_ticks(self) -> int:
        return sum(cpu_ticks(pid) for pid in self.pids())

    def reset_peak_rss(self) -> bool:
        return all([reset_peak_rss(pid) for pid in self.pids()])

    def peak_rss_kib(self) -> int:
        return sum(peak_rss_kib(pid) for pid in self.pids())

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise HarnessError(
                f"{self.name} exited ({self.process.returncode}); its log:\n{tail(self.log)}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(name: str, command: list[str], workdir: Path, address: str, env=None,
          with_children=False, scheme="http") -> Service:
    log = workdir / f"{name}.log"
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, cwd=workdir,
    )
    return Service(name, process, log, address, with_children, scheme)


# The HTTPS scenarios' certificate, trusted by the harness's own probes (set by make_certificate).
_TLS_CONTEXT: ssl.SSLContext | None = None


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """One self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, served by gatehouse and
    nginx alike, so the HTTPS scenarios compare the same handshake and record sizes."""
    global _TLS_CONTEXT
    cert, key = workdir / "tls.pem", workdir / "tls.key"
    run_checked(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                 "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    key.chmod(0o600)
    _TLS_CONTEXT = ssl.create_default_context(cafile=str(cert))
    return cert, key


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0):
    request = urllib.request.Request(url, headers=headers or {})
    context = _TLS_CONTEXT if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(service: Service, path: str, deadline_s: float = 60.0) -> None:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        service.check_alive()
        try:
            status, _ = http_get(f"{service.scheme}://{service.address}{path}", timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise HarnessError(f"{service.name} not ready within {deadline_s:.0f} s; log:\n{tail(service.log)}")


# ---------------------------------------------------------------------------------------------
# What runs: the upstream, the gateways, nginx.

@dataclass
class Observe:
    """The gateway's observe phase as a deployment runs it: metrics on an admin listener, and the
    access log written to a file (in the run's temporary folder)."""

    admin_listen: str
    access_log: Path

    def config_lines(self) -> list[str]:
        return [f"admin_listen: {self.admin_listen}", f'access_log: "{self.access_log}"']


def observe_for(workdir: Path, name: str) -> Observe:
    return Observe(f"127.0.0.1:{free_port()}", workdir / f"{name}.access.log")


_OBSERVE_SUPPORT: dict[str, bool] = {}


def supports_observe(binary: Path, workdir: Path) -> bool:
    """Whether `binary` knows the `admin_listen` and `access_log` keys (issue 11): asked by
    validating a configuration that has them with `gatehouse check-config`, since the
    configuration refuses keys it does not know. An older build (a --baseline) runs without."""
    key = str(binary)
    if key not in _OBSERVE_SUPPORT:
        probe_dir = workdir / "observe-probe"
        probe_dir.mkdir(exist_ok=True)
        config = gateway_config(probe_dir, "probe", f"127.0.0.1:{free_port()}", "127.0.0.1:9", 0,
                                observe_for(probe_dir, "probe"))
        with_keys = subprocess.run([str(binary), "check-config", str(config)],
                                   capture_output=True, text=True, cwd=probe_dir)
        _OBSERVE_SUPPORT[key] = with_keys.returncode == 0
        if not _OBSERVE_SUPPORT[key]:
            say(f"{binary.name}: no metrics/access-log keys in its configuration "
                f"({(with_keys.stderr or with_keys.stdout).strip().splitlines()[-1:] or ['?']}); "
                "it runs without them")
    return _OBSERVE_SUPPORT[key]


def gateway_config(workdir: Path, name: str, listen: str, upstream: str, extra_routes: int,
                   observe: Observe | None = None, rate_limits: bool = True,
                   cached: bool = True, composed: bool = True,
                   tls: tuple[Path, Path] | None = None) -> Path:
    """A gateway configuration with the benchmark's routes, and `extra_routes` more before the
    one the 10,000-route scenario asks for, so its route sits near the end of the table; with
    `observe`, metrics and the access log on; with `rate_limits` (gateways that have them, issue
    13), `/limited/small` behind a policy whose rate no benchmark reaches, so scenario 9 against
    scenario 2 is the limit phase's cost; with `cached`, the response-cache route (issue 13: a
    baseline from before it would refuse the key); with `composed`, `/composed/pair`, one answer
    of two parts that are each what `/public/small` forwards (issue 14); with `tls` (certificate,
    key), the listener speaks TLS 1.3 only, as nginx's HTTPS server does (issue 16)."""
    lines = [
        "# Generated by bench/run.",
        f"listen: {listen}",
        *(observe.config_lines() if observe else []),
        *([ 'tls:', '  min_version: "1.3"', '  certificates:',
            f'    - {{ cert: "{tls[0]}", key: "{tls[1]}" }}'] if tls else []),
        f'store: "sqlite://{workdir}/{name}.db"',
        "state: memory",
        "tokens: { access_ttl: 1h, issuer: gatehouse, audience: gatehouse-api, algorithm: EdDSA }",
        "auth:",
        "  credentials: { service: bench, path: /internal/credentials }",
        "services:",
        f'  bench: {{ upstreams: ["http://{upstream}"], timeout: 10s, connect_timeout: 2s }}',
        *(["rate_limits:", "  unlimited: { requests: 100000, per: 1s, by: ip }"] if rate_limits else []),
        "routes:",
    ]
    route = "  - {{ path: {path}, methods: [GET], service: bench, to: {to}, auth: {auth} }}"
    for i in range(extra_routes):
        # Shapes a real table has: static paths, and paths with a parameter.
        if i % 2:
            lines.append(route.format(path=f'"/api/r{i:05d}/items/{{id}}"', to='"/small"', auth="public"))
        else:
            lines.append(route.format(path=f"/api/r{i:05d}/items", to="/small", auth="public"))
    lines += [
        route.format(path="/public/small", to="/small", auth="public"),
        route.format(path="/public/large", to="/large", auth="public"),
        route.format(path="/private/small", to="/small", auth="authenticated"),
        route.format(path="/api/last/items", to="/small", auth="public"),
    ]
    if rate_limits:
        lines.append("  - { path: /limited/small, methods: [GET], service: bench, to: /small, "
                     "auth: public, rate_limit: [unlimited] }")
    if cached:
        # Issue 13: served from the in-memory cache once stored (an hour: every request a hit).
        lines.append("  - { path: /cached/small, methods: [GET], service: bench, to: /small, "
                     "auth: public, cache: { ttl: 1h } }")
    if composed:
        # Issue 14: two independent parts, asked in parallel, each `/small` on the upstream.
        lines += [
            "  - path: /composed/pair",
            "    methods: [GET]",
            "    auth: public",
            "    compose:",
            "      a: { service: bench, to: /small, required: true }",
            "      b: { service: bench, to: /small, required: true }",
        ]
    path = workdir / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def nginx_config(workdir: Path, listen: str, upstream: str, tls_listen: str,
                 tls: tuple[Path, Path]) -> Path:
    root = workdir / "nginx"
    root.mkdir()
    conf = root / "nginx.conf"
    # Run as root (CI, the helpers' machines), nginx's workers would drop to `nobody`, who cannot
    # enter the private temporary folder its cache files go to: they stay root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    # The plain and the HTTPS servers proxy alike.
    proxy = """        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Room for the 64 KiB answer in memory: never spill to a temporary file.
            proxy_buffers 16 16k;
            proxy_buffer_size 16k;
            proxy_max_temp_file_size 0;
        }"""
    conf.write_text(f"""# Generated by bench/run: nginx as a plain reverse proxy with keep-alive upstream connections.
{user}daemon off;
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream bench {{
        server {upstream};
        keepalive 64;
    }}
    # Issue 13's reference: nginx's own response cache, answers kept an hour, the index in
    # shared memory and the bodies in files (read from the page cache once written).
    proxy_cache_path {root}/cache levels=1:2 keys_zone=bench_cache:10m max_size=64m inactive=1h use_temp_path=off;
    server {{
        listen {listen};
        keepalive_requests 1000000;
        location = /healthz {{ return 200 "{{}}"; }}
        location /cached/ {{
            proxy_pass http://bench/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench_cache;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
{proxy}
    }}
    # Issue 16's reference: the same certificate as gatehouse's, TLS 1.3 only; both servers
    # follow the client's suite order, so wrk's OpenSSL should get TLS_AES_256_GCM_SHA384 with X25519
    # from either. wrk keeps its connections: one handshake each, then records.
    server {{
        listen {tls_listen} ssl;
        ssl_certificate {tls[0]};
        ssl_certificate_key {tls[1]};
        ssl_protocols TLSv1.3;
        keepalive_requests 1000000;
        location = /healthz {{ return 200 "{{}}"; }}
{proxy}
    }}
}}
""")
    return conf


@dataclass
class Scenario:
    key: str
    label: str
    url: str
    expected_bytes: int
    proxy: Service | None
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "gateway"  # direct | gateway | baseline | nginx | floor
    # A cache scenario: the answer header whose value must say "hit" once the probe stored it.
    cache_header: str | None = None
    # How many calls (wrk requests, made in a row on a connection) a client needs for one
    # answer: req/s then counts answers, not calls (issue 14's "two calls in a row").
    calls_per_answer: int = 1


@dataclass
class Params:
    rounds: int
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    timeout_s: int = 2


def wrk(scenario: Scenario, params: Params, duration_s: int) -> tuple[dict, float]:
    command = [
        "wrk", f"-t{params.threads}", f"-c{params.connections}", f"-d{duration_s}s",
        f"--timeout={params.timeout_s}s", "-s", str(BENCH / "report.lua"),
    ]
    for name, value in scenario.headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(scenario.url)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate()
    if process.returncode != 0:
        raise HarnessError(f"wrk failed on {scenario.label}: {err.strip() or out.strip()}")
    # wrk's own CPU, from the kernel's accounting of the finished child.
    wrk_cpu = 0.0
    try:
        import resource
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = usage.ru_utime + usage.ru_stime
    except (ImportError, OSError):
        pass
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):]), wrk_cpu
    raise HarnessError(f"wrk printed no result for {scenario.label}:\n{out}{err}")


def measure(scenario: Scenario, upstream: Service, params: Params, round_no: int,
            children_cpu: list[float]) -> dict:
    proxy = scenario.proxy
    for service in (proxy, upstream):
        if service:
            service.check_alive()
    rss_reset = proxy.reset_peak_rss() if proxy else False
    proxy_before = proxy.cpu_ticks() if proxy else 0
    upstream_before = upstream.cpu_ticks()
    busy_before = machine_busy_ticks()
    started = time.monotonic()
    result, wrk_cpu_total = wrk(scenario, params, params.duration_s)
    elapsed = time.monotonic() - started
    busy = (machine_busy_ticks() - busy_before) / CLOCK_TICKS
    proxy_cpu = ((proxy.cpu_ticks() - proxy_before) / CLOCK_TICKS) if proxy else 0.0
    upstream_cpu = (upstream.cpu_ticks() - upstream_before) / CLOCK_TICKS
    wrk_cpu = wrk_cpu_total - children_cpu[0]
    children_cpu[0] = wrk_cpu_total
    requests = result["requests"]
    duration = result["duration_us"] / 1e6
    errors = result["errors"]
    if errors["status"]:
        raise HarnessError(
            f"{scenario.label}: {errors['status']} answers were not 2xx/3xx: the scenario is "
            "misconfigured (a benchmark of error pages measures nothing)"
        )
    per_10k = 10_000 / requests if requests else 0.0
    return {
        "round": round_no,
        "scenario": scenario.key,
        "requests": requests,
        "duration_s": round(duration, 3),
        # Answers per second: for a scenario of several calls per answer, the calls divided.
        "rps": round(requests / duration / scenario.calls_per_answer, 1) if duration else 0.0,
        "calls_per_answer": scenario.calls_per_answer,
        "bytes": result["bytes"],
        "errors": errors,
        "latency_us": result["latency_us"],
        "proxy_cpu_s": round(proxy_cpu, 2),
        "proxy_cpu_s_per_10k": round(proxy_cpu * per_10k, 4) if proxy else None,
        "proxy_peak_rss_kib": (proxy.peak_rss_kib() if proxy else None),
        "proxy_peak_rss_is_per_run": rss_reset,
        "upstream_cpu_s_per_10k": round(upstream_cpu * per_10k, 4),
        "wrk_cpu_s": round(wrk_cpu, 2),
        "machine_busy_cpu_s": round(busy, 2),
        # CPU that neither wrk, the proxy nor the upstream used: other people's builds, mostly.
        "other_cpu_share": round(max(0.0, busy - proxy_cpu - upstream_cpu - wrk_cpu)
                                 / (elapsed * (os.cpu_count() or 1)), 3),
    }


# ---------------------------------------------------------------------------------------------
# The run.

def build(cargo_profile: str) -> None:
    say("building: cargo build --release -p gatehouse -p bench-tools")
    result = subprocess.run(
        ["cargo", "build", "--profile", cargo_profile, "-p", "gatehouse", "-p", "bench-tools"],
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise HarnessError("the release build failed")


def binary_identity(path: Path) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return {"path": str(path), "sha256_16": digest}


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return (rev + ("+uncommitted" if dirty else "")) if rev else "unknown revision"
    except OSError:
        return "unknown revision"


def run(args: argparse.Namespace) -> int:
    ensure_tools(args.install)
    if not args.no_build:
        build("release")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    # Absolute: every process runs in the temporary folder.
    gatehouse = Path(args.gatehouse).resolve() if args.gatehouse else target / "gatehouse"
    baseline = Path(args.baseline).resolve() if args.baseline else None
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    # The stack's floor (scenario 16) only when it runs: a target built before it has none.
    floor_binary = target / "bench-floor" if wanted is None or "16" in wanted else None
    for binary in [gatehouse, target / "bench-upstream", target / "bench-token", floor_binary,
                   baseline]:
        if binary and not os.access(binary, os.X_OK):
            raise HarnessError(f"{binary} is not built (run without --no-build)")

    if args.smoke:
        params = Params(rounds=1, duration_s=2, warmup_s=0, connections=2, threads=1)
    else:
        params = Params(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup,
                        connections=args.connections, threads=args.threads)
    out_dir = Path(args.out) if args.out else (
        ROOT / "target" / "bench-smoke" if args.smoke else ROOT / "docs" / "bench")
    out_dir.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    services: list[Service] = []
    # The gateway's own default level, as deployed: its per-request span is part of the cost.
    env = dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "info"))
    try:
        upstream_addr = f"127.0.0.1:{free_port()}"
        upstream = start("upstream", [str(target / "bench-upstream"), "--listen", upstream_addr,
                                      "--workers", str(args.upstream_workers)],
                         workdir, upstream_addr)
        services.append(upstream)
        wait_ready(upstream, "/healthz")

        observed: dict[str, bool] = {}

        def gateway(name: str, binary: Path, extra_routes: int,
                    tls: tuple[Path, Path] | None = None) -> tuple[Service, Path]:
            addr = f"127.0.0.1:{free_port()}"
            observe = (observe_for(workdir, name)
                       if args.observe and supports_observe(binary, workdir) else None)
            observed[name] = observe is not None
            # An older baseline knows neither `rate_limits` nor `cache`.
            config = gateway_config(workdir, name, addr, upstream_addr, extra_routes, observe,
                                    rate_limits=binary == gatehouse, cached=binary == gatehouse,
                                    composed=binary == gatehouse, tls=tls)
            service = start(name, [str(binary), "gateway", "--config", str(config)], workdir,
                            addr, env=env, scheme="https" if tls else "http")
            services.append(service)
            return service, config

        gw_small, gw_small_config = gateway("gateway", gatehouse, 0)
        gw_large, _ = gateway("gateway-10k", gatehouse, ROUTES_IN_LARGE_TABLE - 4)
        certificate = make_certificate(workdir)
        gw_tls, _ = gateway("gateway-tls", gatehouse, 0, tls=certificate)
        nginx_addr = f"127.0.0.1:{free_port()}"
        nginx_tls_addr = f"127.0.0.1:{free_port()}"
        nginx_conf = nginx_config(workdir, nginx_addr, upstream_addr, nginx_tls_addr, certificate)
        nginx = start("nginx", [find_nginx(), "-p", str(workdir / "nginx"), "-c", str(nginx_conf),
                                "-e", str(workdir / "nginx" / "error.log")],
                      workdir, nginx_addr, with_children=True)
        services.append(nginx)
        # The stack's floor (crates/bench-tools/src/bin/bench-floor.rs): tokio and hyper
        # forwarding as they came, nothing of the gateway's; what no change inside it can beat.
        floor_addr = f"127.0.0.1:{free_port()}"
        floor = None
        if floor_binary:
            floor = start("floor", [str(floor_binary), "--listen", floor_addr,
                                    "--upstream", upstream_addr], workdir, floor_addr)
            services.append(floor)
        base_small = base_large = None
        if baseline:
            base_small, base_small_config = gateway("baseline", baseline, 0)
            base_large, _ = gateway("baseline-10k", baseline, ROUTES_IN_LARGE_TABLE - 4)
        for service in services:
            wait_ready(service, "/healthz")

        token = mint_token(target, gw_small_config)
        auth = {"Authorization": f"Bearer {token}"}
        scenarios = [
            Scenario("1", "(1) direct to upstream", f"http://{upstream_addr}/small", SMALL_BYTES, None, kind="direct"),
            Scenario("2", "(2) gatehouse, public", f"http://{gw_small.address}/public/small", SMALL_BYTES, gw_small),
            Scenario("3", "(3) gatehouse, authenticated", f"http://{gw_small.address}/private/small", SMALL_BYTES, gw_small, auth),
            Scenario("4", "(4) nginx", f"http://{nginx_addr}/small", SMALL_BYTES, nginx, kind="nginx"),
            Scenario("5", "(5) gatehouse, 10k routes", f"http://{gw_large.address}/api/last/items", SMALL_BYTES, gw_large),
            Scenario("6", "(6) direct, 64 KiB", f"http://{upstream_addr}/large", LARGE_BYTES, None, kind="direct"),
            Scenario("7", "(7) gatehouse, public, 64 KiB", f"http://{gw_small.address}/public/large", LARGE_BYTES, gw_small),
            Scenario("8", "(8) nginx, 64 KiB", f"http://{nginx_addr}/large", LARGE_BYTES, nginx, kind="nginx"),
            Scenario("9", "(9) gatehouse, public, rate-limited", f"http://{gw_small.address}/limited/small", SMALL_BYTES, gw_small),
            # Issue 13: a cached route, every request a hit, against nginx's proxy_cache.
            Scenario("10", "(10) gatehouse, cache hit", f"http://{gw_small.address}/cached/small", SMALL_BYTES, gw_small, cache_header="Cache-Status"),
            Scenario("11", "(11) nginx proxy_cache, hit", f"http://{nginx_addr}/cached/small", SMALL_BYTES, nginx, kind="nginx", cache_header="X-Cache-Status"),
            # Issue 14: one composed answer of two parts, against a client that makes the same
            # two calls through the gateway one after the other (req/s: pairs answered).
            Scenario("12", "(12) gatehouse, composition of 2", f"http://{gw_small.address}/composed/pair", COMPOSED_BYTES, gw_small),
            Scenario("13", "(13) gatehouse, 2 calls in a row", f"http://{gw_small.address}/public/small", SMALL_BYTES, gw_small, calls_per_answer=2),
            # Issue 16: HTTPS at the entrance (keep-alive: the handshake once per connection),
            # same certificate and TLS 1.3 suite as nginx's.
            Scenario("14", "(14) gatehouse, public, HTTPS", f"https://{gw_tls.address}/public/small", SMALL_BYTES, gw_tls),
            Scenario("15", "(15) nginx, HTTPS", f"https://{nginx_tls_addr}/small", SMALL_BYTES, nginx, kind="nginx"),
        ]
        if floor:
            scenarios.append(Scenario("16", "(16) bare tokio + hyper proxy", f"http://{floor_addr}/small", SMALL_BYTES, floor, kind="floor"))
        if baseline:
            # An older baseline creates its store under the umask (0644); the current bench-token
            # refuses a store others can read, as the gateway does.
            for db in workdir.glob("*.db*"):
                db.chmod(0o600)
            base_token = mint_token(target, base_small_config)
            base_auth = {"Authorization": f"Bearer {base_token}"}
            scenarios += [
                Scenario("2b", "(2b) baseline, public", f"http://{base_small.address}/public/small", SMALL_BYTES, base_small, kind="baseline"),
                Scenario("3b", "(3b) baseline, authenticated", f"http://{base_small.address}/private/small", SMALL_BYTES, base_small, base_auth, kind="baseline"),
                Scenario("5b", "(5b) baseline, 10k routes", f"http://{base_large.address}/api/last/items", SMALL_BYTES, base_large, kind="baseline"),
            ]
        if wanted is not None:
            scenarios = [s for s in scenarios if s.key in wanted]
            if not scenarios:
                raise HarnessError(f"no scenario among {args.scenarios}")

        for scenario in scenarios:
            probe(scenario)
        say(f"{len(scenarios)} scenarios answer 200 with the expected bodies")

        if params.warmup_s:
            say(f"warm-up: {params.warmup_s} s per scenario (not recorded)")
            for scenario in scenarios:
                wrk(scenario, params, params.warmup_s)

        children_cpu = [resource_children_cpu()]
        load_before = os.getloadavg()
        runs = []
        for round_no in range(1, params.rounds + 1):
            for scenario in scenarios:
                result = measure(scenario, upstream, params, round_no, children_cpu)
                runs.append(result)
                say(f"round {round_no}/{params.rounds} {scenario.label:34} "
                    f"{result['rps']:>10.0f} req/s  p99 {result['latency_us']['p99'] / 1000:6.2f} ms"
                    f"  other load {result['other_cpu_share']:.0%}")
        load_after = os.getloadavg()

        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "revision": git_revision(),
            "gatehouse": binary_identity(gatehouse),
            "baseline": binary_identity(baseline) if baseline else None,
            "label": args.label,
            "smoke": args.smoke,
            "machine": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
            },
            "tools": {
                "wrk": first_line(["wrk", "-v"]),
                "nginx": first_line([find_nginx(), "-v"]),
            },
            "upstream_workers": args.upstream_workers,
            # Per gateway: whether it ran with metrics and the access log (to a file) on.
            "observe": observed,
            "bodies": {"small_bytes": SMALL_BYTES, "large_bytes": LARGE_BYTES},
        }
        document = summarize(meta, params, scenarios, runs)
        write_outputs(out_dir, document)
        print(render_markdown(document), flush=True)
        say(f"wrote {out_dir}/results.json, results.md, chart.png")
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def resource_children_cpu() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def first_line(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    return (result.stdout + result.stderr).strip().splitlines()[0] if (result.stdout + result.stderr).strip() else ""


def mint_token(target: Path, config: Path) -> str:
    token = run_checked([str(target / "bench-token"), "--config", str(config)],
                        env=dict(os.environ, RUST_LOG="warn")).strip()
    if token.count(".") != 2:
        raise HarnessError(f"bench-token printed no JWT: {token!r}")
    return token


def probe(scenario: Scenario) -> None:
    status, body = http_get(scenario.url, scenario.headers)
    if status != 200 or len(body) != scenario.expected_bytes:
        raise HarnessError(
            f"{scenario.label}: GET {scenario.url} answered {status} with {len(body)} bytes, "
            f"expected 200 with {scenario.expected_bytes}: {body[:300]!r}"
        )
    if scenario.cache_header:
        # The first GET stored it: the second must be a hit, or the scenario measures misses.
        request = urllib.request.Request(scenario.url, headers=scenario.headers)
        with urllib.request.urlopen(request, timeout=5.0) as response:
            said = response.headers.get(scenario.cache_header, "")
        if "hit" not in said.lower():
            raise HarnessError(f"{scenario.label}: the second GET was not a cache hit "
                               f"({scenario.cache_header}: {said!r})")


# ---------------------------------------------------------------------------------------------
# Numbers to conclusions.

def cpu_ratio(a: dict, b: dict) -> float:
    """Proxy CPU seconds per 10k requests of run `a` over run `b`'s."""
    return a["proxy_cpu_s_per_10k"] / b["proxy_cpu_s_per_10k"] if b["proxy_cpu_s_per_10k"] else 0.0


def summarize(meta: dict, params: Params, scenarios: list[Scenario], runs: list[dict]) -> dict:
    summary = {}
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario.key]
        rps = [r["rps"] for r in mine]
        requests = sum(r["requests"] for r in mine)
        cpu = sum(r["proxy_cpu_s"] for r in mine)
        median_rps = statistics.median(rps)
        summary[scenario.key] = {
            "label": scenario.label,
            "kind": scenario.kind,
            "rps_median": round(median_rps, 1),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "rps_spread": round((max(rps) - min(rps)) / median_rps, 3) if median_rps else None,
            "latency_ms": {
                p: round(statistics.median(r["latency_us"][p] for r in mine) / 1000, 3)
                for p in ("p50", "p99", "p999")
            },
            "proxy_cpu_s_per_10k": round(cpu / requests * 10_000, 4) if scenario.proxy and requests else None,
            "proxy_peak_rss_mib": round(max(r["proxy_peak_rss_kib"] for r in mine) / 1024, 1)
            if scenario.proxy else None,
            "socket_errors": sum(
                r["errors"][k] for r in mine for k in ("connect", "read", "write", "timeout")),
        }

    def per_round(fn, *keys):
        if not all(k in summary for k in keys):
            return None
        values = []
        for round_no in range(1, params.rounds + 1):
            by_key = {r["scenario"]: r for r in runs if r["round"] == round_no}
            values.append(fn(*(by_key[k] for k in keys)))
        return {"median": round(statistics.median(values), 3),
                "min": round(min(values), 3), "max": round(max(values), 3),
                "per_round": [round(v, 3) for v in values]}

    ratios = {
        "auth_vs_nginx_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "3", "4"),
        "auth_added_p99_ms": per_round(
            lambda a, b: (a["latency_us"]["p99"] - b["latency_us"]["p99"]) / 1000, "3", "1"),
        "large_table_vs_public_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "5", "2"),
        "public_vs_nginx_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "2", "4"),
        "large_body_vs_nginx_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "7", "8"),
        "auth_after_vs_baseline_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "3", "3b"),
        "public_after_vs_baseline_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "2", "2b"),
        # Issue 11's latency goal is read at 2 connections (`--connections 2`), where nothing
        # queues: what one request pays for going through the gateway.
        "public_added_p50_ms": per_round(
            lambda a, b: (a["latency_us"]["p50"] - b["latency_us"]["p50"]) / 1000, "2", "1"),
        "auth_added_p50_ms": per_round(
            lambda a, b: (a["latency_us"]["p50"] - b["latency_us"]["p50"]) / 1000, "3", "1"),
        "public_cpu_vs_nginx": per_round(cpu_ratio, "2", "4"),
        # The stack's floor: a bare tokio + hyper proxy against nginx, and gatehouse against it.
        "floor_vs_nginx_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "16", "4"),
        "floor_cpu_vs_nginx": per_round(cpu_ratio, "16", "4"),
        "public_vs_floor_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "2", "16"),
        "public_cpu_vs_floor": per_round(cpu_ratio, "2", "16"),
        "public_cpu_vs_baseline": per_round(cpu_ratio, "2", "2b"),
        "auth_cpu_vs_baseline": per_round(cpu_ratio, "3", "3b"),
        "auth_cpu_vs_nginx": per_round(cpu_ratio, "3", "4"),
        # Issue 13: the limit phase (one policy, in memory, never refusing) against the same
        # public route without it.
        "rate_limited_vs_public_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "9", "2"),
        "rate_limited_cpu_vs_public": per_round(cpu_ratio, "9", "2"),
        # Issue 13: a cache hit, gatehouse's in-memory store against nginx's proxy_cache.
        "cache_hit_vs_nginx_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "10", "11"),
        "cache_hit_cpu_vs_nginx": per_round(cpu_ratio, "10", "11"),
        "cache_hit_vs_public_throughput": per_round(lambda a, b: a["rps"] / b["rps"], "10", "2"),
        # Issue 14: answers per second, a composition against its two calls made in sequence;
        # and a composed answer's latency against the two calls' (twice one call's, by median).
        "composition_vs_sequential_answers": per_round(lambda a, b: a["rps"] / b["rps"], "12", "13"),
        "composition_vs_sequential_p50": per_round(
            lambda a, b: a["latency_us"]["p50"] / (2 * b["latency_us"]["p50"]), "12", "13"),
        "composition_cpu_vs_sequential": per_round(
            lambda a, b: a["proxy_cpu_s_per_10k"] / (2 * b["proxy_cpu_s_per_10k"])
            if b["proxy_cpu_s_per_10k"] else 0.0, "12", "13"),
    }
    other = [r["other_cpu_share"] for r in runs]
    noise = {
        "other_cpu_share_mean": round(statistics.mean(other), 3),
        "other_cpu_share_max": round(max(other), 3),
        "rps_spread_max": max(s["rps_spread"] or 0 for s in summary.values()),
    }
    return {"meta": meta, "params": params.__dict__, "summary": summary,
            "ratios": {k: v for k, v in ratios.items() if v}, "noise": noise, "runs": runs}


RATIO_TEXT = {
    "auth_vs_nginx_throughput": ("(3)/(4) throughput: authenticated gatehouse vs nginx", "×"),
    "auth_added_p99_ms": ("(3)−(1) p99: latency gatehouse adds, authenticated", " ms"),
    "large_table_vs_public_throughput": ("(5)/(2) throughput: 10,000 routes vs a few", "×"),
    "public_vs_nginx_throughput": ("(2)/(4) throughput: public gatehouse vs nginx", "×"),
    "large_body_vs_nginx_throughput": ("(7)/(8) throughput: 64 KiB bodies, gatehouse vs nginx", "×"),
    "auth_after_vs_baseline_throughput": ("(3)/(3b) throughput: authenticated, this build vs baseline", "×"),
    "public_after_vs_baseline_throughput": ("(2)/(2b) throughput: public, this build vs baseline", "×"),
    "public_added_p50_ms": ("(2)−(1) p50 at {connections} connections: median latency gatehouse adds over direct, public", " ms"),
    "auth_added_p50_ms": ("(3)−(1) p50 at {connections} connections: median latency gatehouse adds over direct, authenticated", " ms"),
    "public_cpu_vs_nginx": ("(2)/(4) proxy CPU s per 10k requests: public gatehouse vs nginx", "×"),
    "auth_cpu_vs_nginx": ("(3)/(4) proxy CPU s per 10k requests: authenticated gatehouse vs nginx", "×"),
    "floor_vs_nginx_throughput": ("(16)/(4) throughput: a bare tokio + hyper proxy (the stack's floor) vs nginx", "×"),
    "floor_cpu_vs_nginx": ("(16)/(4) proxy CPU s per 10k requests: the stack's floor vs nginx", "×"),
    "public_vs_floor_throughput": ("(2)/(16) throughput: public gatehouse vs the stack's floor", "×"),
    "public_cpu_vs_floor": ("(2)/(16) proxy CPU s per 10k requests: public gatehouse vs the stack's floor", "×"),
    "public_cpu_vs_baseline": ("(2)/(2b) proxy CPU s per 10k requests: public, this build vs baseline", "×"),
    "auth_cpu_vs_baseline": ("(3)/(3b) proxy CPU s per 10k requests: authenticated, this build vs baseline", "×"),
    "rate_limited_vs_public_throughput": ("(9)/(2) throughput: a rate-limited route (a policy no load reaches) vs the same without", "×"),
    "rate_limited_cpu_vs_public": ("(9)/(2) proxy CPU s per 10k requests: rate-limited vs not", "×"),
    "cache_hit_vs_nginx_throughput": ("(10)/(11) throughput: cache hit, gatehouse vs nginx proxy_cache", "×"),
    "cache_hit_cpu_vs_nginx": ("(10)/(11) proxy CPU s per 10k requests: cache hit, gatehouse vs nginx", "×"),
    "cache_hit_vs_public_throughput": ("(10)/(2) throughput: cache hit vs forwarding, gatehouse", "×"),
    "composition_vs_sequential_answers": ("(12)/(13) answers/s: a composition of 2 parts vs a client making the 2 calls in a row", "×"),
    "composition_vs_sequential_p50": ("(12)/(13) p50: a composed answer vs the 2 calls in a row (2 × one call's p50)", "×"),
    "composition_cpu_vs_sequential": ("(12)/(13) gateway CPU per answer: a composition vs the 2 calls", "×"),
}

# Issue 11's targets: (ratio, at least or at most, bound, only at this many connections or None).
GOALS = [
    ("auth_vs_nginx_throughput", ">=", 1.0, None),
    ("public_vs_nginx_throughput", ">=", 1.1, None),
    ("large_body_vs_nginx_throughput", ">=", 0.9, None),
    ("auth_cpu_vs_nginx", "<=", 1.0, None),
    ("public_cpu_vs_nginx", "<=", 1.0, None),
    ("auth_added_p50_ms", "<=", 0.1, 2),
    ("public_added_p50_ms", "<=", 0.1, 2),
    ("large_table_vs_public_throughput", ">=", 0.95, None),
]


def goal_lines(doc: dict) -> list[str]:
    """Where the run stands against issue 11's targets, on the within-round medians."""
    connections = doc["params"]["connections"]
    lines = []
    for key, sense, bound, only_at in GOALS:
        value = doc["ratios"].get(key)
        if value is None:
            continue
        text, unit = RATIO_TEXT[key]
        name = text.format(connections=connections).split(":")[0]
        if only_at is not None and connections != only_at:
            verdict = f"not judged (needs --connections {only_at})"
        else:
            met = value["median"] >= bound if sense == ">=" else value["median"] <= bound
            verdict = "met" if met else "not met"
        lines.append(f"| {name} {'≥' if sense == '>=' else '≤'} {bound:g}{unit} "
                     f"| {value['median']:.2f}{unit} | {verdict} |")
    if not lines:
        return []
    return ["", "| issue 11 goal | median | |", "|---|---:|---|", *lines]


def render_markdown(doc: dict) -> str:
    p, meta, noise = doc["params"], doc["meta"], doc["noise"]
    lines = [
        f"Run {meta['date']} at {meta['revision']}"
        + (f" ({meta['label']})" if meta.get("label") else "")
        + f": wrk -t{p['threads']} -c{p['connections']} -d{p['duration_s']}s, "
        f"{p['rounds']} interleaved round(s), {meta['machine']['cpus']} CPUs"
        + (", smoke mode" if meta["smoke"] else "") + ".",
        "",
        "| scenario | req/s (median) | spread | p50 ms | p99 ms | p99.9 ms | proxy CPU s / 10k req | proxy peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in doc["summary"].values():
        lat = s["latency_ms"]
        cpu = "–" if s["proxy_cpu_s_per_10k"] is None else f"{s['proxy_cpu_s_per_10k']:.3f}"
        rss = "–" if s["proxy_peak_rss_mib"] is None else f"{s['proxy_peak_rss_mib']:.1f}"
        spread = "–" if s["rps_spread"] is None else f"{s['rps_spread']:.0%}"
        lines.append(f"| {s['label']} | {s['rps_median']:,.0f} | {spread} | {lat['p50']:.2f} | "
                     f"{lat['p99']:.2f} | {lat['p999']:.2f} | {cpu} | {rss} |")
    lines += ["", "| ratio | median | range over rounds |", "|---|---:|---:|"]
    for key, value in doc["ratios"].items():
        text, unit = RATIO_TEXT[key]
        text = text.format(connections=p["connections"])
        lines.append(f"| {text} | {value['median']:.2f}{unit} | {value['min']:.2f} … {value['max']:.2f} |")
    lines += goal_lines(doc)
    observe = meta.get("observe") or {}
    if observe:
        on = sorted(name for name, is_on in observe.items() if is_on)
        off = sorted(name for name, is_on in observe.items() if not is_on)
        lines += ["", "Metrics and access log (to a file): "
                  + (f"on for {', '.join(on)}" if on else "on for none")
                  + (f"; off for {', '.join(off)} (no such configuration keys, or --no-observe)"
                     if off else "") + "."]
    lines += [
        "",
        f"Noise: other processes used on average {noise['other_cpu_share_mean']:.0%} of the machine "
        f"during the measurements (at most {noise['other_cpu_share_max']:.0%}); the widest spread of "
        f"one scenario's req/s across rounds was {noise['rps_spread_max']:.0%}. "
        f"Load average {meta['machine']['loadavg_before'][0]:.2f} before, "
        f"{meta['machine']['loadavg_after'][0]:.2f} after.",
    ]
    return "\n".join(lines)


def write_outputs(out_dir: Path, doc: dict) -> None:
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "results.md").write_text(render_markdown(doc) + "\n")
    chart(out_dir / "chart.png", doc)


def chart(path: Path, doc: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = list(doc["summary"].values())
    labels = [s["label"] for s in summary]
    colours = {"direct": "#9e9e9e", "gateway": "#1f77b4", "baseline": "#aec7e8",
               "nginx": "#2ca02c", "floor": "#ff7f0e"}
    colour = [colours[s["kind"]] for s in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(summary) + 2.2))
    y = range(len(summary))
    rps = [s["rps_median"] for s in summary]
    err = [[s["rps_median"] - s["rps_min"] for s in summary],
           [s["rps_max"] - s["rps_median"] for s in summary]]
    left.barh(y, rps, xerr=err, color=colour, capsize=3)
    left.set_yticks(list(y), labels)
    left.invert_yaxis()
    left.set_xlabel("requests/s (median; whiskers: min–max over rounds)")
    for i, value in enumerate(rps):
        left.text(value, i, f" {value:,.0f}", va="center", fontsize=8)
    height = 0.27
    percentiles = [("p50", "p50", "#fdd0a2"), ("p99", "p99", "#fd8d3c"), ("p999", "p99.9", "#a63603")]
    for offset, (key, name, shade) in enumerate(percentiles):
        right.barh([i + (offset - 1) * height for i in y],
                   [s["latency_ms"][key] for s in summary], height=height, label=name, color=shade)
    right.set_yticks(list(y), [""] * len(summary))
    right.invert_yaxis()
    right.set_xlabel("latency, ms (median over rounds)")
    right.legend(loc="best")
    p, meta = doc["params"], doc["meta"]
    fig.suptitle(f"gatehouse vs nginx vs direct — wrk -t{p['threads']} -c{p['connections']} "
                 f"-d{p['duration_s']}s × {p['rounds']} interleaved rounds, {meta['revision']}"
                 + (f", {meta['label']}" if meta.get("label") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark gatehouse against the direct upstream and nginx (docs/BENCHMARKS.md).")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round, 2 s per scenario, 2 connections: proves the harness works")
    parser.add_argument("--install", action="store_true",
                        help="install missing tools (apt-get: wrk nginx; pip: matplotlib)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario per round")
    parser.add_argument("--warmup", type=int, default=2, help="seconds per scenario before round 1")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument("--scenarios", help="comma-separated keys to run, e.g. 1,3,4 (1-13 plain "
                        "HTTP; 14 gatehouse over HTTPS and 15 nginx over HTTPS, same certificate; 16 the "
                        "stack's floor, a bare tokio + hyper proxy)")
    parser.add_argument("--gatehouse", help="the gatehouse binary (default target/release/gatehouse)")
    parser.add_argument("--baseline", help="another gatehouse binary, run as (2b) (3b) (5b) in the same rounds")
    parser.add_argument("--label", help="a note for the report, e.g. 'before'")
    parser.add_argument("--out", help="output folder (default docs/bench, or target/bench-smoke with --smoke)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs)")
    parser.add_argument("--no-observe", dest="observe", action="store_false",
                        help="run the gateways without metrics and access log (on by default "
                             "when the build has them)")
    args = parser.parse_args()
    try:
        return run(args)
    except HarnessError as error:
        print(f"bench/run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
