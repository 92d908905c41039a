#!/usr/bin/python3
"""Runs clang-tidy on sources, skipping those whose last run was clean and whose inputs did not
change (a result cache, like ccache for the compiler; scripts/lint.sh --tidy calls it).

    tidy_cached.py BUILD_DIR SOURCE...

A source's key covers: clang-tidy's version, .clang-tidy, its compile command (with the
checkout's path taken out, so every clone shares the cache), and every file it includes, as
Ninja recorded them when it built the object (`ninja -t deps`): the project's files by content, system headers by
path, size and modification time (a package upgrade changes those). Only clean results are
cached; a source with findings runs again every time. Cache: $AGENTWIRE_TIDY_CACHE, else
~/.cache/agentwire/clang-tidy. Exits 1 when any source has findings.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

NOISE = re.compile(r"^(\d+ warnings? generated\.|Suppressed \d+ warnings.*|Use -header-filter.*)$")


def object_of(entry):
    args = shlex.split(entry["command"])
    return args[args.index("-o") + 1] if "-o" in args else None


def ninja_dependencies(build_dir, objects):
    """{object: [files it was compiled from]} as Ninja recorded them (`ninja -t deps`: the
    compiler's -MD output, which Ninja keeps in .ninja_deps)."""
    run = subprocess.run(["ninja", "-C", build_dir, "-t", "deps", *objects],
                         capture_output=True, text=True, check=False)
    deps, current = {}, None
    for line in run.stdout.splitlines():
        if line and not line.startswith(" "):
            target, _, state = line.partition(": ")
            current = target if "(VALID)" in state else None  # STALE: changed since built
            if current:
                deps[current] = []
        elif line.strip() and current:
            deps[current].append(os.path.normpath(os.path.join(build_dir, line.strip())))
    return deps


def cache_key(root, build_dir, entry, deps, version, config):
    if not deps:
        return None  # not built (or changed since): the source just runs
    digest = hashlib.sha256()
    digest.update(version)
    digest.update(config)
    digest.update(entry["command"].replace(root, "<root>").encode())
    # Sorted as the key sees them (checkout path taken out), so every clone hashes in one order.
    for dep in sorted(set(deps), key=lambda d: d.replace(root, "<root>")):
        try:
            if dep.startswith(root + os.sep) or dep.startswith(build_dir + os.sep):
                with open(dep, "rb") as f:
                    digest.update(dep.replace(root, "<root>").encode() + b"\0" + f.read())
            else:
                st = os.stat(dep)
                digest.update(f"{dep}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        except OSError:
            return None
    return digest.hexdigest()


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
    build_dir = os.path.realpath(sys.argv[1])
    sources = [os.path.realpath(s) for s in sys.argv[2:]]
    with open(os.path.join(build_dir, "compile_commands.json"), encoding="utf-8") as f:
        entries = {os.path.realpath(e["file"]): e for e in json.load(f)}
    version = subprocess.run(["clang-tidy", "--version"], capture_output=True, check=True).stdout
    with open(os.path.join(root, ".clang-tidy"), "rb") as f:
        config = f.read()
    cache = os.environ.get("AGENTWIRE_TIDY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "agentwire", "clang-tidy")
    os.makedirs(cache, exist_ok=True)

    objects = {s: object_of(entries[s]) for s in sources}
    deps = ninja_dependencies(build_dir, [o for o in objects.values() if o])

    def check(source):
        key = cache_key(root, build_dir, entries[source], deps.get(objects[source]), version,
                        config)
        if key and os.path.exists(os.path.join(cache, key)):
            return source, True, True, ""
        run = subprocess.run(
            ["clang-tidy", "-p", build_dir, "--quiet", "--warnings-as-errors=*", source],
            capture_output=True, text=True)
        output = "\n".join(line for line in (run.stdout + run.stderr).splitlines()
                           if not NOISE.match(line))
        if run.returncode == 0 and key:
            open(os.path.join(cache, key), "w").close()
        return source, run.returncode == 0, False, output

    jobs = int(os.environ.get("AGENTWIRE_JOBS") or os.cpu_count() or 2)
    clean = cached = 0
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for done, (source, ok, hit, output) in enumerate(pool.map(check, sources), start=1):
            name = os.path.relpath(source, root)
            cached += hit
            if ok:
                clean += 1
            else:
                failed.append(name)
                print(output, flush=True)
            if not hit:
                print(f"lint: clang-tidy [{done}/{len(sources)}] {name}: "
                      f"{'clean' if ok else 'FINDINGS'}", file=sys.stderr, flush=True)
    print(f"lint: clang-tidy: {clean} of {len(sources)} sources clean "
          f"({cached} unchanged since a clean run, from {cache})")
    if failed:
        print("lint: clang-tidy findings in: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
