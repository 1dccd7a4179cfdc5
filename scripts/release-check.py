#!/usr/bin/env python3
"""Proves a release directory (scripts/release --check calls this):

1. every binary needs no glibc symbol version newer than --glibc (read from
   the ELF's version-needs section with readelf, which reads any architecture);
2. `--version` of each binary runs (under qemu-aarch64 for aarch64 on x86_64);
3. `arc-control dev` starts in a temporary data dir, answers /healthz, creates
   an app over HTTP with the generated admin key, lists it, and exits cleanly
   on SIGTERM.
"""

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BINS = ["arc-control", "arc-media", "arcctl"]


def fail(msg):
    print(f"release-check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def version_tuple(v):
    return tuple(int(x) for x in v.split("."))


def glibc_needs(path):
    """GLIBC_x.y versions the binary needs (empty for a static binary)."""
    out = subprocess.run(["readelf", "-V", "--wide", path], capture_output=True, text=True, check=True).stdout
    return sorted(set(re.findall(r"Name: GLIBC_([0-9.]+)", out)), key=version_tuple)


def runner(arch):
    """The command prefix that runs a binary of `arch` here."""
    if platform.machine() == arch:
        return []
    if arch == "aarch64":
        loader_root = "/usr/aarch64-linux-gnu"
        if not os.path.exists(os.path.join(loader_root, "lib", "ld-linux-aarch64.so.1")):
            fail(f"{loader_root}/lib/ld-linux-aarch64.so.1 missing (Debian package libc6-arm64-cross)")
        return ["qemu-aarch64", "-L", loader_root]
    fail(f"cannot run {arch} binaries on {platform.machine()}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, key=None, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def smoke(prefix, directory, arch):
    data_dir = tempfile.mkdtemp(prefix=f"arc-release-{arch}-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(data_dir, "arc-control.log")
    started = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            prefix + [os.path.join(directory, "arc-control"), "dev", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}", "--media-udp", "127.0.0.1:0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ARC_LOG": "warn"},
        )
    try:
        deadline = time.time() + 180  # emulation is slow
        while True:
            if proc.poll() is not None:
                fail(f"arc-control exited with {proc.returncode} before serving; log:\n" + open(log_path).read())
            try:
                status, body = http("GET", f"{base}/healthz", timeout=5)
                if status == 200 and body.strip() == b"ok":
                    break
            except OSError:
                pass
            if time.time() > deadline:
                fail("arc-control did not answer /healthz within 180 s; log:\n" + open(log_path).read())
            time.sleep(0.5)
        up_s = time.time() - started
        key = open(os.path.join(data_dir, "admin.key")).read().strip()
        status, body = http("POST", f"{base}/v1/apps", key, {"name": "smoke"})
        if status != 201:
            fail(f"POST /v1/apps answered {status}: {body[:300]!r}")
        created = json.loads(body)
        if not created.get("app_key") or not str(created.get("app_secret", "")).startswith("sk_"):
            fail(f"POST /v1/apps returned no credentials: {created}")
        status, body = http("GET", f"{base}/v1/apps", key)
        apps = json.loads(body).get("apps", []) if status == 200 else []
        if [a.get("name") for a in apps] != ["smoke"]:
            fail(f"GET /v1/apps answered {status}: {body[:300]!r}")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fail("arc-control did not exit within 60 s of SIGTERM")
        if code != 0:
            fail(f"arc-control exited with {code} after SIGTERM; log:\n" + open(log_path).read())
        print(f"    smoke ok: up in {up_s:.1f} s, app {created['app_key']} created and listed, clean exit on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    ap.add_argument("--glibc", default="2.17")
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    limit = version_tuple(args.glibc)
    machine = {"x86_64": "x86-64", "aarch64": "aarch64"}[args.arch]
    for b in BINS:
        path = os.path.join(args.dir, b)
        if not os.path.isfile(path):
            fail(f"{path} missing: run scripts/release first")
        desc = subprocess.run(["file", "-b", path], capture_output=True, text=True, check=True).stdout.strip()
        if machine not in desc:
            fail(f"{path} is not an {args.arch} binary: {desc}")
        needs = glibc_needs(path)
        newer = [v for v in needs if version_tuple(v) > limit]
        if newer:
            out = subprocess.run(["readelf", "--dyn-syms", "--wide", path], capture_output=True, text=True).stdout
            offenders = sorted({line.split()[-1] for line in out.splitlines() if any(f"GLIBC_{v}" in line for v in newer)})
            fail(f"{b} needs GLIBC_{', GLIBC_'.join(newer)} (> {args.glibc}): {', '.join(offenders[:20])}")
        size = os.path.getsize(path) / 1e6
        print(f"    {b}: {size:.1f} MB, glibc needs {needs[-1] if needs else 'none (static)'}; {desc.split(',')[0]}")
    prefix = runner(args.arch)
    for b in BINS:
        r = subprocess.run(prefix + [os.path.join(args.dir, b), "--version"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not r.stdout.startswith(b):
            fail(f"{b} --version: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")
        print(f"    {' '.join(prefix[:1]) + ' ' if prefix else ''}{r.stdout.strip()}")
    smoke(prefix, args.dir, args.arch)


if __name__ == "__main__":
    main()
