"""LoRA Studio: fine-tune open LLMs with LoRA/QLoRA from the browser. Run `python app.py --help`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="LoRA Studio, in the browser.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the whole lab)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--workspace", default=None, help="folder for datasets, models, runs and exports (default ./workspace)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="a login; repeat for several people. With no login, anyone who reaches the port may use it")
    p.add_argument("--auth-file", help="a file of USER:PASSWORD lines, one login each")
    p.add_argument("--admin", action="append", default=[], metavar="USER",
                   help="a user who may stop or delete anyone's runs; repeat for several")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest dataset upload accepted (default 200 MB)")
    p.add_argument("--gpus", default=None,
                   help="GPUs the job queue may use, e.g. 0,1 (default: all visible; none: train on the CPU)")
    p.add_argument("--allow-remote-code", action="store_true",
                   help="let models run their own Python code (trust_remote_code); only for models you trust")
    return p.parse_args(argv)


def read_logins(args) -> list[tuple[str, str]]:
    from studio.runs import LOCAL_USER

    lines = list(args.auth)
    if args.auth_file:
        lines += [l.strip() for l in Path(args.auth_file).read_text().splitlines() if l.strip() and not l.startswith("#")]
    logins = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            sys.exit(f"error: a login must look like USER:PASSWORD (got '{line}')")
        if user == LOCAL_USER:  # it would own every run started while the studio had no logins
            sys.exit(f"error: a login may not be called '{LOCAL_USER}': that name owns the runs started while the "
                     "studio had no logins. Choose another name for this login.")
        logins.append((user, password))
    return logins


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a lab's workstation phones nobody home
    if args.allow_remote_code:
        os.environ["STUDIO_ALLOW_REMOTE_CODE"] = "1"  # read by studio.models, also in the training children
    from studio.jobs import JobQueue
    from studio.models import resolve_model
    from studio.ui.app import appearance, build_app
    from studio.ui.context import Studio
    from studio.workspace import Workspace

    logins = read_logins(args)  # a mistyped login stops the start at once, not after the model is prepared
    workspace = Workspace.at(args.workspace)
    resolve_model("embedded", workspace)  # converts the embedded default model on the first start
    devices = None if args.gpus is None else \
        ([""] if args.gpus == "none" else [g.strip() for g in args.gpus.split(",") if g.strip()])
    queue = JobQueue(workspace, devices=devices)
    if queue.gpu_problem:
        print(f"WARNING: {queue.gpu_problem}", file=sys.stderr, flush=True)
    studio = Studio(workspace, queue, admins=set(args.admin), logins=bool(logins), max_upload_mb=args.max_upload_mb)
    build_app(studio).launch(**appearance(), **launch_options(args, workspace, logins))


def launch_options(args, workspace, logins: list[tuple[str, str]]) -> dict:
    """How the app is served: who may log in, the upload cap, and the one folder files are served from."""
    return dict(server_name=args.host, server_port=args.port, auth=logins or None,
                max_file_size=f"{args.max_upload_mb}mb", allowed_paths=[str(workspace.exports)], show_error=False)


if __name__ == "__main__":
    main()
