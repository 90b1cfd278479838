#!/usr/bin/env python3
"""The portal's benchmark (issue 12), in one run:

1. A portal job on the 1,000,000-row x 64-feature XGBoost input (16 files), one replica on the
   embedded SQLite store, against plain `mlapp transform` on the same files: seconds and rows/s,
   in rounds that interleave the two (this machine is noisy minute to minute).
2. The same job on three replicas sharing a real PostgreSQL (started here on a loopback port):
   rows/s and how the items were shared out.
3. The monthly estimate: 900 M rows in 30 minutes, from the measured rate per replica.

Run with `bench/portal.sh` (release build, ONNX Runtime and PostgreSQL; no reference stacks).
Standard library only.
"""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (paths, RSS sampling, logging)

ROWS = int(os.environ.get("PORTAL_ROWS", "1000000"))
FILES = int(os.environ.get("PORTAL_FILES", "16"))
ROUNDS = int(os.environ.get("PORTAL_ROUNDS", "3"))
# Items a replica scores at once (--portal-workers); unset: mlapp's default.
WORKERS = os.environ.get("PORTAL_WORKERS")
MODEL = os.path.join(run.MODELS, "xgboost")
MONTHLY_ROWS = 900_000_000
MONTHLY_SECONDS = 30 * 60


def make_data(folder):
    """FILES files of varied rows: each example row scaled by a random factor per cell."""
    base = [[float(v) for v in line.split(",")]
            for line in open(os.path.join(run.PAYLOADS, "xgboost", "rows.csv")) if line.strip()]
    rng = random.Random(7)
    os.makedirs(folder)
    per = ROWS // FILES
    for f in range(FILES):
        n = per if f < FILES - 1 else ROWS - per * (FILES - 1)
        with open(os.path.join(folder, f"part-{f:03d}.csv"), "w") as out:
            for r in range(n):
                row = base[(f * per + r) % len(base)]
                out.write(",".join(f"{v * rng.uniform(0.5, 1.5):.7g}" for v in row) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


class Postgres:
    """A private PostgreSQL cluster on a loopback port (as the tests start one)."""

    def __init__(self, tmp):
        bins = sorted(d for d in os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{bins[-1]}/bin"
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self.run("initdb", "-D", f"{self.dir}/data", "-U", "mlapp", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "start", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")
        self.n = 0

    def run(self, tool, *args):
        cmd = [f"{self.bin}/{tool}", *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def database(self):
        self.n += 1
        name = f"bench{self.n}"
        subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlapp",
                        "-d", "postgres", "-c", f'CREATE DATABASE "{name}"'], check=True,
                       stdout=subprocess.DEVNULL)
        return f"postgres://mlapp@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop")


def replicas(n, store_args, tmp):
    """n servers of the portal, each its own process; their ports."""
    procs, ports = [], []
    for i in range(n):
        port = free_port()
        args = [run.MLAPP, "serve", "--model-dir", MODEL, "--host", "127.0.0.1", "--port", str(port),
                "--portal-poll-seconds", "0.1"] + store_args(i) \
            + (["--portal-workers", WORKERS] if WORKERS else [])
        env = dict(os.environ, RUST_LOG="warn")
        if n > 1:
            env["MLAPP_REPLICA_ID"] = f"r{i + 1}"
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ports.append(port)
    for port in ports:
        until = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if time.time() > until:
                    raise RuntimeError("a replica did not start")
                time.sleep(0.1)
    return procs, ports


def portal_run(name, ports, data, out):
    """Creates the job through the first replica, invokes it through the last, and checks
    through the middle one until it ends; seconds from invoke to Completed, and who did what."""
    shutil.rmtree(out, ignore_errors=True)
    call(ports[0], "POST", "/api/providers/prediction/create",
         {"name": name, "model": MODEL, "input": data, "output": out})
    t = time.time()
    call(ports[-1], "POST", "/api/providers/prediction/invoke", {"name": name})
    check = ports[len(ports) // 2]
    while True:
        v = call(check, "GET", f"/api/providers/prediction/check?name={name}")
        if v["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped"):
            break
        time.sleep(0.05)
    took = time.time() - t
    if v["status"] != "Completed":
        raise RuntimeError(f"job {name} ended {v['status']}: {v.get('reason')}")
    by = {}
    for item in v["items"]:
        by[item["replica"]] = by.get(item["replica"], 0) + 1
    return {"seconds": took, "rows_s": ROWS / took, "items_by_replica": by,
            "records": v["progress"]["records_ok"]}


def transform_run(data, out):
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    subprocess.run([run.MLAPP, "transform", "--model-dir", MODEL, "--input", data, "--output", out],
                   check=True, env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    took = time.time() - t
    return {"seconds": took, "rows_s": ROWS / took}


def same_outputs(a, b):
    names = sorted(os.listdir(a))
    return names == sorted(os.listdir(b)) and all(
        open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read() for n in names)


def main():
    out = {"machine": run.machine(), "rows": ROWS, "files": FILES, "rounds": []}
    tmp = tempfile.mkdtemp(prefix="mlapp-portal-bench-")
    os.chmod(tmp, 0o755)
    data = os.path.join(tmp, "in")
    run.log(f"writing {ROWS:,} rows in {FILES} files")
    make_data(data)
    pg = Postgres(tmp)
    try:
        state = os.path.join(tmp, "state")
        one, one_ports = replicas(1, lambda i: ["--state-dir", state], tmp)
        url = pg.database()
        three, three_ports = replicas(3, lambda i: ["--db-url", url], tmp)
        try:
            for n in range(ROUNDS):
                run.log(f"round {n + 1}: transform, portal on 1 replica (SQLite), portal on 3 replicas (PostgreSQL)")
                r = {"transform": transform_run(data, os.path.join(tmp, "t-out"))}
                r["portal_1"] = portal_run(f"one-{n}", one_ports, data, os.path.join(tmp, "p1-out"))
                r["portal_3"] = portal_run(f"three-{n}", three_ports, data, os.path.join(tmp, "p3-out"))
                r["identical"] = same_outputs(os.path.join(tmp, "t-out"), os.path.join(tmp, "p1-out")) \
                    and same_outputs(os.path.join(tmp, "t-out"), os.path.join(tmp, "p3-out"))
                run.log(f"  transform {r['transform']['rows_s']:,.0f} rows/s, portal x1 "
                        f"{r['portal_1']['rows_s']:,.0f} ({r['portal_1']['seconds'] / r['transform']['seconds'] - 1:+.1%}), "
                        f"portal x3 {r['portal_3']['rows_s']:,.0f} {r['portal_3']['items_by_replica']}")
                out["rounds"].append(r)
        finally:
            for p in one + three:
                p.terminate()
                p.wait()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    report(out)


def report(out):
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    rs = out["rounds"]
    lines = [f"Machine: {out['machine']}. {out['rows']:,} rows in {out['files']} files, XGBoost (64 features).", "",
             "| round | transform s | portal ×1 s | portal ×1 ÷ transform | portal ×3 s | items per replica (×3) | outputs identical |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rs):
        lines.append(f"| {i + 1} | {r['transform']['seconds']:.2f} | {r['portal_1']['seconds']:.2f} | "
                     f"{r['portal_1']['seconds'] / r['transform']['seconds']:.3f} | {r['portal_3']['seconds']:.2f} | "
                     f"{r['portal_3']['items_by_replica']} | {r['identical']} |")
    ratio = med([r["portal_1"]["seconds"] / r["transform"]["seconds"] for r in rs])
    rate1 = med([r["portal_1"]["rows_s"] for r in rs])
    rate3 = med([r["portal_3"]["rows_s"] for r in rs])
    need = MONTHLY_ROWS / MONTHLY_SECONDS
    lines += ["", f"Median: the portal on one replica takes {ratio:.3f}× the time of `mlapp transform` "
              f"({rate1:,.0f} rows/s); three replicas on this machine's {os.cpu_count()} CPUs: {rate3:,.0f} rows/s.",
              f"Monthly job: 900 M rows in 30 min need {need:,.0f} rows/s, that is {need / rate1:.1f} replicas "
              f"like this one at the measured rate; plan {int(need / rate1 * 1.5) + 1} for S3 transfer and the last files."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
