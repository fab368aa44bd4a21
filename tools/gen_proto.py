#!/usr/bin/env python3
"""Regenerate fillers/caffe_pb2.py from proto/caffe.proto, and each fork schema
proto/forks/NAME.proto into fillers/layers/forks/NAME_pb2.py.

Usage (from the repository root):

    python tools/gen_proto.py           # rewrite the generated modules
    python tools/gen_proto.py --check   # exit 1 if a committed module is stale

A fork schema may import "caffe.proto" (for FillerParameter); its generated module then
imports the package's caffe_pb2 (protoc writes a top-level import, made relative here).

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
FORKS_DIR = PACKAGE_DIR / "layers" / "forks"


def _schemas():
    """(proto name relative to proto/, generated module name, target path) of every schema."""
    yield PROTO_NAME, GENERATED_NAME, PACKAGE_DIR / GENERATED_NAME
    for proto in sorted((PROTO_DIR / "forks").glob("*.proto")):
        module = proto.stem + "_pb2.py"
        yield f"forks/{proto.name}", f"forks/{module}", FORKS_DIR / module


def _run_protoc(out_dir: Path, proto_name: str = PROTO_NAME, generated_name: str = GENERATED_NAME) -> Path:
    """Compile one schema into out_dir and return the generated file's path."""
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
        proto_name,
    ]
    rc = protoc.main(args)
    if rc != 0:
        sys.exit(f"gen_proto: protoc failed with exit code {rc}")
    generated = out_dir / generated_name
    if not generated.is_file():
        sys.exit(f"gen_proto: protoc did not produce {generated_name}")
    text = generated.read_text()
    fixed = text.replace("\nimport caffe_pb2 as caffe__pb2\n", "\nfrom ... import caffe_pb2 as caffe__pb2\n")
    if fixed != text:
        generated.write_text(fixed)
    return generated


def check() -> int:
    status = 0
    for proto_name, generated_name, target in _schemas():
        with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
            fresh = _run_protoc(Path(tmp), proto_name, generated_name).read_bytes()
        if not target.is_file():
            print(f"{target.relative_to(REPO_ROOT)} is missing; run python tools/gen_proto.py")
            status = 1
        elif target.read_bytes() != fresh:
            print(
                f"{target.relative_to(REPO_ROOT)} is out of date with "
                f"proto/{proto_name}; run python tools/gen_proto.py"
            )
            status = 1
        else:
            print(f"{target.relative_to(REPO_ROOT)} is up to date")
    return status


def generate() -> int:
    for proto_name, generated_name, target in _schemas():
        # Generate into a temp dir first so a failed run never leaves a
        # half-written module in the package.
        with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
            generated = _run_protoc(Path(tmp), proto_name, generated_name)
            target.parent.mkdir(parents=True, exist_ok=True)
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
