#!/usr/bin/env python3
"""Run a load balancer in the foreground on its shipped config, with only the daemons' addresses and the
address it listens on replaced, and everything it writes (config, pid, logs, temporary files) in one folder;
nothing under /etc is read or written. To try replicas on one machine, and what the end-to-end test
(tests/e2e/test_scale_out.py) and the benchmark (bench/replicas.py) start.

    python3 deploy/standalone.py nginx --listen 127.0.0.1:8080 \\
        --upstream 127.0.0.1:11435 --upstream 127.0.0.1:11436 --prefix /tmp/localllm-nginx

`nginx` runs deploy/nginx/localllm.conf, `haproxy` deploy/haproxy/localllm.cfg. Either way `<prefix>/access.log`
names the daemon each request went to (`replica1`, `replica2`, … in the order of `--upstream`), and whether
it was retried: nginx writes `upstream=<first>, <second> upstream_status=503, 200`, HAProxy `+1` in its retry
count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
NGINX_LOG = (
    '$remote_addr "$request" $status upstream=$upstream_addr upstream_status=$upstream_status '
    "request_time=$request_time"
)


@dataclass(frozen=True)
class Balancer:
    name: str
    conf: Path
    server: re.Pattern[str]  # a daemon's line: (indent)(keyword) <address>(the rest)
    listen: re.Pattern[str]  # the one line saying where it listens: (indent)(keyword) <address>(the rest)


BALANCERS = {
    "nginx": Balancer(
        "nginx",
        DEPLOY / "nginx" / "localllm.conf",
        re.compile(r"^([ \t]*)(server)[ \t]+\S+([ \t]+max_fails=[^\n]*;)[ \t]*$", re.M),
        re.compile(r"^([ \t]*)(listen)[ \t]+[^;\n]+(;)[^\n]*$", re.M),
    ),
    "haproxy": Balancer(
        "haproxy",
        DEPLOY / "haproxy" / "localllm.cfg",
        re.compile(r"^([ \t]*)(server)[ \t]+\S+[ \t]+\S+([ \t]+check\b[^\n#]*?)[ \t]*(?:#[^\n]*)?$", re.M),
        re.compile(r"^([ \t]*)(bind)[ \t]+\S+()[^\n]*$", re.M),
    ),
}


def find(binary: str) -> str | None:
    """Debian's package's binary (in /usr/sbin, which may be off PATH), or the one on PATH."""
    found = shutil.which(binary)
    if found:
        return found
    path = f"/usr/sbin/{binary}"
    return path if os.access(path, os.X_OK) else None


def render(balancer: Balancer, conf: str, *, listen: str, upstreams: list[str]) -> str:
    """`conf` with its daemons' lines replaced by one per address of `upstreams` (keeping the shipped
    parameters) and its listening line by `listen`; every other line as shipped."""
    servers = list(balancer.server.finditer(conf))
    if not servers or not upstreams or len(balancer.listen.findall(conf)) != 1:
        raise ValueError(f"{balancer.conf}: expected the daemons' `server` lines and one listening line")
    for previous, current in zip(servers, servers[1:], strict=False):
        if conf[previous.end() : current.start()].strip():
            raise ValueError(f"{balancer.conf}: the daemons' `server` lines must follow one another")
    indent, keyword, rest = servers[0].groups()
    name = " replica{}" if balancer.name == "haproxy" else ""
    lines = "\n".join(
        f"{indent}{keyword}{name.format(i)} {address}{rest}" for i, address in enumerate(upstreams, start=1)
    )
    out = conf[: servers[0].start()] + lines + conf[servers[-1].end() :]
    return balancer.listen.sub(lambda m: f"{m.group(1)}{m.group(2)} {listen}{m.group(3)}", out)


def prepare(balancer: Balancer, prefix: Path, *, listen: str, upstreams: list[str]) -> list[Path]:
    """Write the rendered config (`<prefix>/localllm.conf`) and what runs it there; the files to run with."""
    prefix = prefix.resolve()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    site = prefix / "localllm.conf"
    site.write_text(render(balancer, balancer.conf.read_text(), listen=listen, upstreams=upstreams))
    main = prefix / ("nginx.conf" if balancer.name == "nginx" else "global.cfg")
    if balancer.name == "nginx":
        user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""  # else workers are nobody
        temp = "".join(
            f"    {kind}_temp_path {prefix / 'temp' / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        main.write_text(
            f"daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n{user}"
            "events { worker_connections 1024; }\n"
            f"http {{\n    log_format localllm '{NGINX_LOG}';\n    access_log {prefix / 'access.log'} localllm;\n"
            f"{temp}    include {site};\n}}\n"
        )
    else:
        main.write_text(f"global\n    log stdout format raw local0\n    pidfile {prefix / 'haproxy.pid'}\n")
    return [main, site]


def command(balancer: Balancer, binary: str, files: list[Path], *, check: bool = False) -> list[str]:
    main, site = files
    if balancer.name == "nginx":
        args = ["-p", str(main.parent), "-c", str(main), "-e", str(main.parent / "error.log")]
        return [binary, *args, *(["-t"] if check else [])]
    return [binary, *(["-c"] if check else ["-db"]), "-f", str(main), "-f", str(site)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("balancer", choices=sorted(BALANCERS))
    parser.add_argument("--listen", required=True, help="address to listen on, such as 127.0.0.1:8080")
    parser.add_argument("--upstream", action="append", required=True, help="a daemon's address (repeat)")
    parser.add_argument("--prefix", required=True, type=Path, help="folder for the config, pid, logs, temp files")
    parser.add_argument("--check", action="store_true", help="only check the configuration")
    parser.add_argument("--binary", default=None, help="the balancer's program (default: on PATH, or /usr/sbin)")
    args = parser.parse_args()
    balancer = BALANCERS[args.balancer]
    binary = args.binary or find(balancer.name)
    if binary is None:
        sys.exit(f"no {balancer.name} found: install Debian's (apt-get install {balancer.name}), or pass --binary")
    files = prepare(balancer, args.prefix, listen=args.listen, upstreams=args.upstream)
    argv = command(balancer, binary, files, check=args.check)
    if balancer.name == "haproxy" and not args.check:  # its log goes to stdout: into access.log, as nginx's
        log = os.open(files[0].parent / "access.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    os.execv(argv[0], argv)  # the balancer itself in this process: signals reach it directly


if __name__ == "__main__":
    main()
