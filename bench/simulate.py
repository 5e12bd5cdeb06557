#!/usr/bin/env python3
"""bench/simulate: N gateway processes (N = 1, 2, 4) on this machine against one Redis, with
public, authenticated, rate-limited and cached routes; records throughput and Redis commands
per request for each, and the PostgreSQL work of a login and a refresh, so that the capacity
model in docs/SCALING.md rests on measured figures (docs/bench/scaling/).

Throughput on one 2-core machine is bounded by its cores: it shows how the fleet shares them,
not how it scales on more machines. The Redis and PostgreSQL figures per request do not depend
on the machine, and are what the model multiplies.

    bench/simulate                 # build (release), run, write docs/bench/scaling/
    bench/simulate --no-build --duration 3 --replicas 1,2 --out target/sim
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (the benchmark's own helpers: processes, configs, wrk)
from harness import (ROOT, HarnessError, Params, Scenario, free_port, gateway_config,  # noqa: E402
                     http_get, say, start, wait_ready, wrk)

POSTGRES = os.environ.get("GATEHOUSE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")

ROUTES = [
    # (kind, path, authenticated)
    ("public", "/public/small", False),
    ("authenticated", "/private/small", True),
    ("limited", "/limited/small", False),
    ("cached", "/cached/small", False),
]


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          check=True).stdout


def redis_commands(port: int) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (INFO commandstats)."""
    calls = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            stats = dict(field.split("=") for field in fields.split(","))
            calls[name] = int(stats["calls"])
    return calls


def wrk_all(urls: list[str], headers: dict[str, str], params: Params, duration: int) -> int:
    """One wrk per gateway at once; the total of requests answered."""
    total = 0
    processes = []
    for url in urls:
        command = ["wrk", f"-t{params.threads}", f"-c{params.connections}", f"-d{duration}s",
                   "--timeout=2s", "-s", str(harness.BENCH / "report.lua")]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        processes.append(subprocess.Popen(command + [url], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise HarnessError(f"wrk failed: {err.strip() or out.strip()}")
        for line in out.splitlines():
            if line.startswith("BENCH_JSON "):
                result = json.loads(line[len("BENCH_JSON "):])
                if result.get("errors", {}).get("status", 0):
                    raise HarnessError(f"non-2xx answers during the run: {result['errors']}")
                total += result["requests"]
    return total


def fleet(args, target: Path, workdir: Path, redis_port: int, upstream: str, n: int, env):
    """`n` gateways on the one Redis, each on its own port; returns them and one config."""
    gateways, config = [], None
    for index in range(n):
        name = f"gw{n}-{index}"
        address = f"127.0.0.1:{free_port()}"
        config = gateway_config(workdir, name, address, upstream, 0,
                                harness.observe_for(workdir, name))
        text = config.read_text().replace("state: memory",
                                          f"state: redis://127.0.0.1:{redis_port}")
        # One store for the fleet, as replicas share it (SQLite here: the store is not on the
        # request path of these routes).
        text = text.replace(f"{workdir}/{name}.db", f"{workdir}/fleet{n}.db")
        config.write_text(text)
        gateway = start(name, [str(target / "gatehouse"), "gateway", "--config", str(config)],
                        workdir, address, env=env)
        gateways.append(gateway)
    try:
        for gateway in gateways:
            wait_ready(gateway, "/healthz")
    except HarnessError:
        for gateway in gateways:  # none is left running when one could not start
            gateway.stop()
        raise
    return gateways, config


def measure_fleets(args, target: Path, workdir: Path, env) -> list[dict]:
    redis_port = free_port()
    redis = start("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                            "--appendonly", "no"], workdir, f"127.0.0.1:{redis_port}")
    upstream_addr = f"127.0.0.1:{free_port()}"
    upstream = start("upstream", [str(target / "bench-upstream"), "--listen", upstream_addr,
                                  "--workers", "1"], workdir, upstream_addr)
    processes = [redis, upstream]
    rows = []
    try:
        for _ in range(50):
            try:
                if redis_cli(redis_port, "PING").strip() == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.1)
        wait_ready(upstream, "/healthz")
        params = Params(rounds=1, duration_s=args.duration, warmup_s=1,
                        connections=args.connections, threads=1)
        for n in args.replicas:
            gateways, config = fleet(args, target, workdir, redis_port, upstream_addr, n, env)
            processes += gateways
            token = harness.mint_token(target, config)
            for kind, path, authenticated in ROUTES:
                headers = {"Authorization": f"Bearer {token}"} if authenticated else {}
                urls = [f"http://{gateway.address}{path}" for gateway in gateways]
                for url in urls:  # warm: pools, and the cache entry stored
                    http_get(url, headers)
                redis_cli(redis_port, "CONFIG", "RESETSTAT")
                cpu_before = sum(gateway.cpu_ticks() for gateway in gateways)
                redis_before = redis.cpu_ticks()
                requests = wrk_all(urls, headers, params, args.duration)
                cpu = sum(gateway.cpu_ticks() for gateway in gateways) - cpu_before
                redis_cpu = redis.cpu_ticks() - redis_before
                commands = redis_commands(redis_port)
                total = sum(commands.values())
                row = {
                    "replicas": n, "route": kind, "requests": requests,
                    "requests_per_s": round(requests / args.duration),
                    "gateway_cpu_s_per_10k": round(cpu / os.sysconf("SC_CLK_TCK")
                                                   / max(requests, 1) * 10_000, 3),
                    "redis_commands_per_request": round(total / max(requests, 1), 3),
                    "redis_cpu_s_per_10k": round(redis_cpu / os.sysconf("SC_CLK_TCK")
                                                 / max(requests, 1) * 10_000, 3),
                    "redis_commands": commands,
                }
                say(f"N={n} {kind:13} {row['requests_per_s']:>7} req/s  "
                    f"redis {row['redis_commands_per_request']} cmd/req  {commands}")
                rows.append(row)
            for gateway in gateways:
                gateway.stop()
    finally:
        for process in processes:
            process.stop()
    return rows


def pg(database: str, sql: str) -> str:
    url = POSTGRES.rsplit("/", 1)[0] + "/" + database
    return subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True,
                          check=True).stdout.strip()


def pg_work(database: str) -> dict[str, int]:
    fields = ["xact_commit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
              "tup_deleted"]
    row = pg(database, f"SELECT {', '.join(fields)} FROM pg_stat_database "
                       f"WHERE datname = '{database}'")
    return dict(zip(fields, (int(value) for value in row.split("|"))))


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def measure_logins(args, target: Path, workdir: Path, env) -> dict:
    """`gatehouse up` with the gateway's store on PostgreSQL: the store's work per login and
    per refresh, read from pg_stat_database around `args.logins` of each."""
    database = f"gatehouse_sim_{os.getpid()}"
    pg("postgres", f"CREATE DATABASE {database}")
    config = workdir / "up.yaml"
    text = (ROOT / "config" / "gateway.yaml").read_text()
    store_url = POSTGRES.rsplit("/", 1)[0] + "/" + database
    text = "\n".join(f'store: "{store_url}"' if line.startswith("store:") else line
                     for line in text.splitlines()) + "\n"
    config.write_text(text)
    ports = {name: free_port() for name in ["gateway", "users", "orders", "clock", "admin"]}
    up = start("up", [str(target / "gatehouse"), "up", "--config", str(config),
                      "--data-dir", str(workdir / "up-data"),
                      "--gateway-port", str(ports["gateway"]), "--users-port", str(ports["users"]),
                      "--orders-port", str(ports["orders"]), "--clock-port", str(ports["clock"]),
                      "--admin-port", str(ports["admin"])],
               workdir, f"127.0.0.1:{ports['gateway']}", env=env)
    try:
        wait_ready(up, "/readyz")
        base = f"http://127.0.0.1:{ports['gateway']}"
        # The first login warms the key cache and the pools.
        post_json(f"{base}/api/login", {"username": "test", "password": "test"})
        pg(database, "SELECT pg_stat_clear_snapshot()")
        before = pg_work(database)
        refresh_tokens = [post_json(f"{base}/api/login",
                                    {"username": "test", "password": "test"})["refresh_token"]
                          for _ in range(args.logins)]
        time.sleep(1)  # pg_stat_database is updated by the backends at most every 500 ms
        after_login = pg_work(database)
        for token in refresh_tokens:
            post_json(f"{base}/api/token/refresh", {"refresh_token": token})
        time.sleep(1)
        after_refresh = pg_work(database)
    finally:
        up.stop()
        pg("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    per = lambda a, b: {k: round((b[k] - a[k]) / args.logins, 2) for k in a}  # noqa: E731
    result = {"logins": args.logins, "per_login": per(before, after_login),
              "per_refresh": per(after_login, after_refresh)}
    say(f"PostgreSQL (gateway store) per login {result['per_login']}, "
        f"per refresh {result['per_refresh']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2,4",
                        type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=8, help="per gateway")
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--profile", default="release", choices=["release", "debug"],
                        help="which build to run; in debug only the Redis and PostgreSQL work "
                             "per request mean anything, not the throughput")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "scaling"))
    args = parser.parse_args()
    if not args.no_build:
        harness.build("release" if args.profile == "release" else "dev")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / args.profile
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-sim-"))
    env = dict(os.environ, RUST_LOG="warn")
    try:
        fleets = measure_fleets(args, target, workdir, env)
        logins = measure_logins(args, target, workdir, env)
    except HarnessError as error:
        print(f"bench/simulate: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"revision": harness.git_revision(), "profile": args.profile,
                "machine_cores": os.cpu_count(),
                "duration_s": args.duration, "connections_per_gateway": args.connections,
                "fleets": fleets, "postgres": logins}
    (out / "scaling.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = ["| replicas | route | requests/s (all) | gateway CPU s / 10k | Redis cmd / request "
             "| Redis CPU s / 10k |", "|---|---|---|---|---|---|"]
    for row in fleets:
        lines.append(f"| {row['replicas']} | {row['route']} | {row['requests_per_s']} | "
                     f"{row['gateway_cpu_s_per_10k']} | {row['redis_commands_per_request']} | "
                     f"{row['redis_cpu_s_per_10k']} |")
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    say(f"written: {out}/scaling.json, scaling.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
