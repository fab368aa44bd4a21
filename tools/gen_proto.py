#!/usr/bin/env python3
"""Regenerate fillers/caffe_pb2.py from proto/caffe.proto.

Usage (from the repository root):

    python tools/gen_proto.py           # rewrite fillers/caffe_pb2.py
    python tools/gen_proto.py --check   # exit 1 if the committed file is stale

The protoc bundled with grpcio-tools is used, so no system protoc is needed.
The protoc version decides which protobuf runtime the generated module
requires (see the ValidateProtobufRuntimeVersion call at its top).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
PROTO_NAME = "caffe.proto"
PACKAGE_DIR = REPO_ROOT / "fillers"
GENERATED_NAME = "caffe_pb2.py"


def _run_protoc(out_dir: Path) -> Path:
    """Compile caffe.proto into out_dir and return the generated file's path."""
    try:
        from grpc_tools import protoc
    except ImportError:  # pragma: no cover - depends on the environment
        sys.exit("gen_proto: grpcio-tools is not installed (pip install grpcio-tools)")

    # Pass the .proto relative to its include dir so the generated file's
    # embedded source name is "caffe.proto" no matter where we run from.
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--python_out={out_dir}",
        PROTO_NAME,
    ]
    rc = protoc.main(args)
    if rc != 0:
        sys.exit(f"gen_proto: protoc failed with exit code {rc}")
    generated = out_dir / GENERATED_NAME
    if not generated.is_file():
        sys.exit(f"gen_proto: protoc did not produce {GENERATED_NAME}")
    return generated


def check() -> int:
    target = PACKAGE_DIR / GENERATED_NAME
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        fresh = _run_protoc(Path(tmp)).read_bytes()
    if not target.is_file():
        print(f"{target.relative_to(REPO_ROOT)} is missing; run python tools/gen_proto.py")
        return 1
    if target.read_bytes() != fresh:
        print(
            f"{target.relative_to(REPO_ROOT)} is out of date with "
            f"proto/{PROTO_NAME}; run python tools/gen_proto.py"
        )
        return 1
    print(f"{target.relative_to(REPO_ROOT)} is up to date")
    return 0


def generate() -> int:
    target = PACKAGE_DIR / GENERATED_NAME
    # Generate into a temp dir first so a failed run never leaves a
    # half-written module in the package.
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        generated = _run_protoc(Path(tmp))
        PACKAGE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(generated, target)
    print(f"wrote {target.relative_to(REPO_ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory and fail if the committed "
        "module differs",
    )
    args = parser.parse_args(argv)
    return check() if args.check else generate()


if __name__ == "__main__":
    sys.exit(main())
