"""Instruction profile of one gateway scenario under valgrind's callgrind: `bench/profile`.

Counts instructions, not seconds, so the result does not depend on what else the machine is
doing: the same binary and requests give the same counts. Start-up is not counted (callgrind
starts with instrumentation off and the harness turns it on once the gateway is warm), so the
total divided by the requests is the cost of one request. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import HarnessError, Params, Scenario, say  # noqa: E402

PATHS = {"2": "/public/small", "3": "/private/small", "5": "/api/last/items", "7": "/public/large",
         "9": "/limited/small", "10": "/cached/small"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/profile", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="3", choices=sorted(PATHS))
    parser.add_argument("--duration", type=int, default=20, help="seconds of load under callgrind")
    parser.add_argument("--gatehouse", help="the gatehouse binary (default target/release/gatehouse)")
    parser.add_argument("--out", default=str(harness.ROOT / "target" / "bench-profile"))
    parser.add_argument("--top", type=int, default=45, help="functions listed")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--no-observe", dest="observe", action="store_false",
                        help="without metrics and access log (on by default when the build has them)")
    args = parser.parse_args()
    try:
        return profile(args)
    except HarnessError as error:
        print(f"bench/profile: {error}", file=sys.stderr)
        return 1


def profile(args: argparse.Namespace) -> int:
    for tool, package in [("valgrind", "valgrind"), ("callgrind_control", "valgrind"),
                          ("wrk", "wrk")]:
        if not shutil.which(tool):
            raise HarnessError(f"missing tool {tool}: apt-get install -y {package}")
    if not args.no_build:
        harness.build("release")
    target = Path(os.environ.get("CARGO_TARGET_DIR", harness.ROOT / "target")) / "release"
    # Absolute: the gateway runs in the temporary folder.
    gatehouse = Path(args.gatehouse).resolve() if args.gatehouse else target / "gatehouse"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-profile-"))
    services = []
    try:
        upstream_addr = f"127.0.0.1:{harness.free_port()}"
        upstream = harness.start("upstream", [str(target / "bench-upstream"), "--listen",
                                              upstream_addr], workdir, upstream_addr)
        services.append(upstream)
        harness.wait_ready(upstream, "/healthz")
        addr = f"127.0.0.1:{harness.free_port()}"
        routes = harness.ROUTES_IN_LARGE_TABLE - 4 if args.scenario == "5" else 0
        # Metrics and the access log on, as deployed, when this build has them.
        observe = (harness.observe_for(workdir, "gateway")
                   if args.observe and harness.supports_observe(gatehouse, workdir) else None)
        # Only scenario 9 needs `rate_limits` and 10 `cache`; an older binary (--gatehouse) would
        # refuse them.
        config = harness.gateway_config(workdir, "gateway", addr, upstream_addr, routes, observe,
                                        rate_limits=args.scenario == "9",
                                        cached=args.scenario == "10")
        callgrind_out = out / f"callgrind.scenario{args.scenario}.out"
        gateway = harness.start(
            "gateway",
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={callgrind_out}", str(gatehouse), "gateway",
             "--config", str(config)],
            workdir, addr,
            env=dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "info")))
        services.append(gateway)
        harness.wait_ready(gateway, "/healthz", deadline_s=180)
        headers = {}
        if args.scenario == "3":
            # An older gatehouse (--gatehouse) creates its store under the umask (0644); the
            # current bench-token refuses a store others can read, as the gateway does.
            for db in workdir.glob("*.db*"):
                db.chmod(0o600)
            headers["Authorization"] = f"Bearer {harness.mint_token(target, config)}"
        scenario = Scenario(args.scenario, f"scenario {args.scenario}", f"http://{addr}{PATHS[args.scenario]}",
                            harness.LARGE_BYTES if args.scenario == "7" else harness.SMALL_BYTES,
                            gateway, headers)
        harness.probe(scenario)  # also fills the caches a warm gateway has
        control = ["callgrind_control", str(gateway.process.pid)]
        harness.run_checked(control[:1] + ["-i", "on"] + control[1:])
        params = Params(rounds=1, duration_s=args.duration, warmup_s=0, connections=2, threads=1,
                        timeout_s=10)
        result, _ = harness.wrk(scenario, params, args.duration)
        harness.run_checked(control[:1] + ["-i", "off"] + control[1:])
        requests = result["requests"]
        if result["errors"]["status"]:
            raise HarnessError(f"{result['errors']['status']} non-2xx answers under callgrind")
        gateway.stop()  # callgrind writes its file at exit
        for _ in range(100):
            if callgrind_out.exists() and callgrind_out.stat().st_size:
                break
            time.sleep(0.1)
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", f"--threshold=99", str(callgrind_out)],
            capture_output=True, text=True).stdout
        total = re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", annotated)
        total_ir = int(total.group(1).replace(",", "")) if total else 0
        report = out / f"scenario{args.scenario}.txt"
        lines = [f"scenario {args.scenario}: {requests} requests, {total_ir:,} instructions, "
                 f"{total_ir // max(requests, 1):,} instructions per request",
                 f"binary {gatehouse}, metrics and access log {'on' if observe else 'off'}", ""]
        lines += annotated.splitlines()[: args.top + 25]
        report.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        say(f"wrote {report} and {callgrind_out}")
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
