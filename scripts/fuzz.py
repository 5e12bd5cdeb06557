"""Schema fuzzing: schemathesis against a running `gatehouse up`, through the gateway, once with
an admin's access token and once with a user's; any server error or answer the document does not
describe (status code, content type, headers, schema) fails the run. Run it as `scripts/fuzz`,
which brings the pinned schemathesis (docs/ARCHITECTURE.md, "Schema fuzzing").

Which document:
- `--documents gateway` (the default): the gateway's merged `GET /openapi.json`, every path the
  gateway's own; the one CI fuzzes.
- `--documents services`: each service's own `/openapi.json`, fetched from its internal port and
  seen as the gateway publishes it: only the operations a route of config/gateway.yaml exposes,
  at the route's path, behind the gateway's bearer token. For a service's document alone, and
  for a gateway that does not publish one yet.

Everything runs in a temporary folder (the data folder, `up`'s log, the access log and the
reports), removed afterwards unless `--keep`; a failure prints where to look first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "gateway.yaml"
ST_CONFIG = ROOT / "scripts" / "fuzz.toml"

# The demo accounts `up` creates in a new data folder (README, "Quickstart").
ACCOUNTS = {"user": ("test", "test"), "admin": ("admin", "a")}
SERVICES = ("clock", "orders", "users")

# Each document is fuzzed in stages, so no call locks the caller out before the rest is tested:
# a logout ends the session, and account administration may void the caller's token (a cut-off
# after a role change) or rename the caller's own account, after which it cannot sign in as
# before: so it comes last. Each stage signs in anew. (name, path regex, include or exclude)
STAGES = [
    ("", r"^/api/(users|logout)(/|$)", False),
    ("logout", r"^/api/logout$", True),
    ("accounts", r"^/api/users(/|$)", True),
]

# What is checked of every answer. Left out: `ignored_auth`, which sends the request without
# the token and expects a 401 — the gateway's authentication, proven with real tokens by
# crates/gateway/tests and the e2e suite, not by the document. Everything else is in.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "use_after_free",
    "ensure_resource_availability",
]


class FuzzError(Exception):
    pass


def say(message: str) -> None:
    print(f"fuzz: {message}", flush=True)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(nothing written)"


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# ---------------------------------------------------------------------------------------------
# The system under test.

@dataclass
class System:
    process: subprocess.Popen
    log: Path
    addresses: dict[str, str]  # part (gateway, users, orders, clock, admin) -> host:port

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise FuzzError(f"`gatehouse up` exited ({self.process.returncode}); its log:\n"
                            f"{tail(self.log)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


ADDRESS_LINE = re.compile(r"^\s+(gateway|users|orders|clock|admin)\s+http://(\S+)")


def start_up(binary: Path, workdir: Path) -> System:
    """`gatehouse up` on free ports (port 0 everywhere; it prints what it took), a new data folder
    (so the demo accounts are created) and the repository's gateway configuration."""
    log = workdir / "up.log"
    env = dict(os.environ, GATEHOUSE_ACCESS_LOG=str(workdir / "access.log"))
    command = [str(binary), "up", "--host", "127.0.0.1", "--data-dir", str(workdir / "data"),
               "--config", str(CONFIG)]
    for part in ("gateway", "users", "orders", "clock", "admin"):
        command += [f"--{part}-port", "0"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=workdir, env=env)
    system = System(process, log, {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        system.check_alive()
        text = log.read_text(errors="replace")
        if "Sign in:" in text:
            for line in text.splitlines():
                match = ADDRESS_LINE.match(line)
                if match:
                    system.addresses[match.group(1)] = match.group(2)
            if "demo accounts were created" not in text:
                raise FuzzError("`up` did not create the demo accounts in its new data folder")
            return system
        time.sleep(0.1)
    system.stop()
    raise FuzzError(f"`gatehouse up` did not start within 60 s; its log:\n{tail(log)}")


# Each account's device token from its first sign-in, sent back at the next: the fuzzer's own
# wrong guesses at the login endpoint spend the per-IP and per-username budgets, which a known
# device's sign-in does not count against (docs/SECURITY.md, 9.3).
DEVICES: dict[str, str] = {}


def sign_in(gateway: str, username: str, password: str) -> str:
    body = {"username": username, "password": password}
    if username in DEVICES:
        body["device_token"] = DEVICES[username]
    status, answer = http("POST", f"http://{gateway}/api/login", body)
    if status != 200:
        raise FuzzError(f"signing in as {username}: {status} {answer[:300]!r}")
    tokens = json.loads(answer)
    if "device_token" in tokens:
        DEVICES[username] = tokens["device_token"]
    return tokens["access_token"]


# ---------------------------------------------------------------------------------------------
# The documents.

def fetch_json(url: str) -> dict:
    status, body = http("GET", url)
    if status != 200:
        raise FuzzError(f"GET {url}: {status} {body[:300]!r}")
    return json.loads(body)


def gateway_view(document: dict, service: str, routes: list[dict]) -> dict:
    """`document`, a service's own, as the gateway exposes it: each operation a route forwards
    to, at the route's path and behind its policy; nothing else (`/internal/*` included)."""
    paths: dict[str, dict] = {}
    for route in routes:
        if route.get("service") != service:
            continue
        item = document.get("paths", {}).get(route["to"])
        if item is None:
            raise FuzzError(f"route {route['path']}: {service} documents no {route['to']}")
        public = route.get("auth") == "public"
        for method in route["methods"]:
            operation = item.get(method.lower())
            if operation is None:
                raise FuzzError(f"route {route['path']}: {service} documents no "
                                f"{method} {route['to']}")
            operation = dict(operation, security=[] if public else [{"bearerAuth": []}])
            paths.setdefault(route["path"], {})[method.lower()] = operation
    view = dict(document, paths=paths)
    view.pop("servers", None)
    components = dict(view.get("components", {}))
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    view["components"] = components
    return view


def stages(document: Path) -> list[tuple[str, str, bool]]:
    """The stages of [`STAGES`] that select some path of `document`."""
    paths = json.loads(document.read_text()).get("paths", {})
    return [
        stage for stage in STAGES
        if any(bool(re.search(stage[1], path)) == stage[2] for path in paths)
    ]


def documents(kind: str, system: System, workdir: Path) -> list[tuple[str, Path]]:
    """(name, file) of each document to fuzz, saved in `workdir`."""
    gateway = system.addresses["gateway"]
    if kind == "gateway":
        found = [("gateway", fetch_json(f"http://{gateway}/openapi.json"))]
    else:
        routes = yaml.safe_load(CONFIG.read_text())["routes"]
        found = [
            (service, gateway_view(
                fetch_json(f"http://{system.addresses[service]}/openapi.json"), service, routes))
            for service in SERVICES
        ]
    saved = []
    for name, document in found:
        if not document.get("paths"):
            raise FuzzError(f"the {name} document has no operations")
        path = workdir / f"{name}.openapi.json"
        path.write_text(json.dumps(document, indent=1))
        saved.append((name, path))
    return saved


# ---------------------------------------------------------------------------------------------
# schemathesis.

@dataclass
class Outcome:
    name: str
    cases: int
    failures: int
    exit_code: int


def junit_counts(path: Path) -> tuple[int, int]:
    """(test cases, failed or erred ones) of a schemathesis JUnit report; (0, 0) if missing."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return 0, 0
    cases = root.findall(".//testcase")
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    return len(cases), len(failed)


def run_schemathesis(name: str, document: Path, stage: tuple[str, str, bool], base_url: str,
                     token: str, args, workdir: Path) -> Outcome:
    st = Path(sys.executable).parent / "st"
    reports = workdir / "reports" / re.sub(r"\W+", "-", name)
    _, pattern, include = stage
    command = [
        str(st), "--config-file", str(ST_CONFIG), "run", str(document),
        "--url", base_url,
        f"--{'include' if include else 'exclude'}-path-regex", pattern,
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS),
        "--seed", str(args.seed),
        "--max-examples", str(args.max_examples),
        "--phases", args.phases,
        "--workers", "1",
        # Examples found by an earlier run would change what this one sends.
        "--generation-database", "none",
        "--request-timeout", "15",
        "--no-color",
        "--report", "junit",
        "--report-dir", str(reports),
        "--report-junit-path", str(reports / "junit.xml"),
    ]
    say(f"{name}: st run {document.name} --url {base_url} --seed {args.seed} "
        f"--max-examples {args.max_examples} --phases {args.phases}")
    started = time.monotonic()
    result = subprocess.run(command, cwd=workdir)
    cases, failures = junit_counts(reports / "junit.xml")
    say(f"{name}: {cases} operations, {failures} failed, exit {result.returncode}, "
        f"{time.monotonic() - started:.0f} s")
    return Outcome(name, cases, failures, result.returncode)


# ---------------------------------------------------------------------------------------------

def build_binary() -> Path:
    say("cargo build -p gatehouse --bin gatehouse")
    subprocess.run(["cargo", "build", "-q", "-p", "gatehouse", "--bin", "gatehouse"],
                   cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "gatehouse"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/fuzz", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true",
                        help="install the pinned schemathesis if missing (scripts/fuzz does it)")
    parser.add_argument("--binary", type=Path,
                        help="the gatehouse binary (default: cargo build, target/debug/gatehouse)")
    parser.add_argument("--documents", choices=["gateway", "services"], default="gateway",
                        help="the gateway's merged /openapi.json (default), or each service's "
                             "own seen through the gateway's routes")
    parser.add_argument("--as", dest="roles", default="user,admin",
                        help="whose tokens, in order (default user,admin: the user first, so "
                             "nothing the admin changes touches the user's account first)")
    parser.add_argument("--seed", type=int, default=15, help="schemathesis's seed (default 15)")
    parser.add_argument("--max-examples", type=int, default=20,
                        help="test cases per operation and phase (default 20)")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful",
                        help="schemathesis phases (default all)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (logs, reports) and print where it is")
    args = parser.parse_args()
    roles = [role for role in args.roles.split(",") if role]
    if not roles or any(role not in ACCOUNTS for role in roles):
        parser.error(f"--as takes some of {', '.join(ACCOUNTS)}")

    binary = (args.binary or build_binary()).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-fuzz-"))
    system = None
    outcomes: list[Outcome] = []
    try:
        system = start_up(binary, workdir)
        gateway = system.addresses["gateway"]
        say(f"gatehouse up: gateway http://{gateway}, data in {workdir / 'data'}")
        docs = documents(args.documents, system, workdir)
        for role in roles:
            for name, document in docs:
                for stage in stages(document):
                    label = f"{name} {stage[0]}".strip()
                    token = sign_in(gateway, *ACCOUNTS[role])
                    outcomes.append(run_schemathesis(f"{label} as {role}", document, stage,
                                                     f"http://{gateway}", token, args, workdir))
                    system.check_alive()
    except FuzzError as error:
        say(f"FAILED: {error}")
        return 1
    finally:
        if system is not None:
            system.stop()
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    passed = [o for o in outcomes if o.exit_code == 0 and o.cases > 0 and o.failures == 0]
    for outcome in outcomes:
        if outcome not in passed:
            if outcome.cases == 0:
                reason = "ran no operation"
            elif outcome.failures:
                reason = f"{outcome.failures} operations failed"
            else:
                reason = f"schemathesis exited {outcome.exit_code} (its output is above)"
            say(f"FAILED: {outcome.name}: {reason}")
    print(f"fuzz: {len(passed)} passed, {len(outcomes) - len(passed)} failed", flush=True)
    return 0 if len(passed) == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
