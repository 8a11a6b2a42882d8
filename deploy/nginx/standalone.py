#!/usr/bin/env python3
"""Run nginx in the foreground on `localllm.conf` beside this file, with only its upstream `server` lines and
its `listen` line replaced, and its pid, logs and temporary files in one folder (nothing under /etc/nginx is
read or written): to try replicas on one machine, and what the end-to-end test (tests/e2e/test_scale_out.py)
and the benchmark (bench/replicas.py) start.

    python3 deploy/nginx/standalone.py --listen 127.0.0.1:8080 \\
        --upstream 127.0.0.1:11435 --upstream 127.0.0.1:11436 --prefix /tmp/localllm-nginx

The access log (`<prefix>/access.log`) names the daemons each request went to (`upstream=`, two of them when
nginx retried it on another) and their statuses.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

CONF = Path(__file__).resolve().with_name("localllm.conf")
_SERVER = re.compile(r"^([ \t]*)server[ \t]+\S+([ \t]+max_fails=[^\n]*;)[ \t]*$", re.M)
_LISTEN = re.compile(r"^([ \t]*)listen[ \t]+[^;\n]+;", re.M)
LOG_FORMAT = (
    '$remote_addr "$request" $status upstream=$upstream_addr upstream_status=$upstream_status '
    "request_time=$request_time"
)


def find_nginx() -> str | None:
    """Debian's nginx (`apt-get install nginx`), or the one on PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render(conf: str, *, listen: str, upstreams: list[str]) -> str:
    """`conf` with its upstream's `server` lines replaced by one per address of `upstreams` (each keeping the
    shipped parameters) and its one `listen` line by `listen`; every other line as shipped."""
    servers = list(_SERVER.finditer(conf))
    if not servers or not upstreams or len(_LISTEN.findall(conf)) != 1:
        raise ValueError("expected the upstream's `server ... max_fails=...;` lines and one `listen` line")
    indent, params = servers[0].group(1), servers[0].group(2)
    lines = "\n".join(f"{indent}server {address}{params}" for address in upstreams)
    out = conf[: servers[0].start()] + lines
    for previous, current in zip(servers, servers[1:], strict=False):
        between = conf[previous.end() : current.start()]
        if between.strip():
            raise ValueError("the upstream's `server` lines must follow one another")
    out += conf[servers[-1].end() :]
    return _LISTEN.sub(lambda m: f"{m.group(1)}listen {listen};", out)


def main_conf(prefix: Path, site: Path) -> str:
    """nginx.conf around `site`: in the foreground, everything it writes under `prefix`."""
    user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""  # else workers run as nobody
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n{user}"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    log_format localllm '{LOG_FORMAT}';\n"
        f"    access_log {prefix / 'access.log'} localllm;\n"
        f"{temp}\n"
        f"    include {site};\n"
        "}\n"
    )


def prepare(prefix: Path, *, listen: str, upstreams: list[str], conf: Path = CONF) -> Path:
    """Write `<prefix>/nginx.conf` and `<prefix>/localllm.conf` (the rendered site); return the former."""
    prefix = prefix.resolve()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    site = prefix / "localllm.conf"
    site.write_text(render(conf.read_text(), listen=listen, upstreams=upstreams))
    main = prefix / "nginx.conf"
    main.write_text(main_conf(prefix, site))
    return main


def command(nginx: str, main: Path, *, check: bool = False) -> list[str]:
    prefix = main.parent
    return [nginx, "-p", str(prefix), "-c", str(main), "-e", str(prefix / "error.log"), *(["-t"] if check else [])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--listen", required=True, help="address nginx listens on, such as 127.0.0.1:8080")
    parser.add_argument("--upstream", action="append", required=True, help="a daemon's address (repeat)")
    parser.add_argument("--prefix", required=True, type=Path, help="folder for nginx.conf, pid, logs, temp files")
    parser.add_argument("--check", action="store_true", help="only test the configuration (nginx -t)")
    parser.add_argument("--nginx", default=None, help="the nginx binary (default: nginx on PATH, /usr/sbin/nginx)")
    args = parser.parse_args()
    nginx = args.nginx or find_nginx()
    if nginx is None:
        sys.exit("no nginx found: install Debian's (apt-get install nginx), or pass --nginx")
    main = prepare(args.prefix, listen=args.listen, upstreams=args.upstream)
    argv = command(nginx, main, check=args.check)
    os.execv(argv[0], argv)  # nginx itself in this process: signals reach it directly


if __name__ == "__main__":
    main()
