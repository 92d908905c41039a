"""Offline install: `python3 -m pip install ./sdk/python` (Debian: add --break-system-packages,
or use a venv made with --system-site-packages so it sees python3-confluent-kafka and
python3-protobuf). The protobuf classes are generated here from ../../schemas with protoc
(Debian's protobuf-compiler), never copied by hand; AGENTWIRE_SCHEMAS points elsewhere."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["agentwire/v1/events.proto", "agentwire/v1/control.proto"]


class BuildWithProtos(build_py):
    def run(self):
        super().run()
        schemas = os.environ.get("AGENTWIRE_SCHEMAS") or os.path.join(HERE, "..", "..", "schemas")
        protoc = os.environ.get("PROTOC") or shutil.which("protoc")
        if not protoc:
            raise SystemExit("agentwire: protoc not found (Debian package protobuf-compiler)")
        if not os.path.exists(os.path.join(schemas, PROTOS[0])):
            raise SystemExit(f"agentwire: {schemas}/{PROTOS[0]} not found; install from the "
                             "repository checkout or set AGENTWIRE_SCHEMAS")
        subprocess.check_call([protoc, f"--python_out={self.build_lib}", "-I", schemas,
                               *[os.path.join(schemas, p) for p in PROTOS]])
        for package in ("agentwire/v1",):
            init = os.path.join(self.build_lib, package, "__init__.py")
            open(init, "a").close()


setup(
    name="agentwire",
    version="0.1.0",
    description="Publish agent run lifecycle events to agentwire (Kafka) from Python workers",
    packages=["agentwire"],
    python_requires=">=3.9",
    # Debian 12: python3-confluent-kafka (1.7), python3-protobuf (3.21). Not declared as pip
    # requirements: pip would try to fetch them from PyPI instead of using Debian's.
    install_requires=[],
    cmdclass={"build_py": BuildWithProtos},
)
