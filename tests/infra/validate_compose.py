#!/usr/bin/python3
"""Validates agentwire's deployment files without a Docker engine or a cloud account.

What can go wrong in infra/ long before anyone runs it, and what this checks:
  * infra/compose.yaml and infra/cloudrun/*.yaml parse as YAML;
  * every file they reference exists: build context, Dockerfile, bind-mounted files and
    directories, scripts run from those mounts, nginx.conf, infra/kafka/, infra/sql/;
  * every compose service has a health check, and every depends_on names a real service with
    a condition it can meet;
  * every agentwire command line (compose `command:`, Cloud Run `args:`) names a real
    subcommand and only flags that `agentwire <subcommand> --help` lists, with a value where
    the flag takes one;
  * every AGENTWIRE_* variable they set is one that some subcommand reads;
  * the Dockerfile copies files that exist, runs as a non-root user, and its runtime stage
    installs the package of every shared library the built binary links;
  * nginx forwards WebSocket upgrades to services that exist;
  * the topic settings agree with the cluster (replication factor <= brokers, ...);
  * the Cloud Run manifests set what a WebSocket gateway and a Kafka consumer need.

Usage: validate_compose.py --binary build/ci/cli/agentwire --root .
Prints one line per check; exits 1 listing every failure.
"""

import argparse
import fnmatch
import os
import re
import shlex
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - bootstrap installs python3-yaml
    print("validate_compose: python3-yaml is missing (scripts/bootstrap.sh installs it)")
    sys.exit(1)


class Report:
    def __init__(self):
        self.failures = []
        self.checks = 0

    def ok(self, what):
        self.checks += 1
        print(f"ok    {what}")

    def fail(self, what):
        self.checks += 1
        self.failures.append(what)
        print(f"FAIL  {what}")

    def check(self, condition, what, why=""):
        if condition:
            self.ok(what)
        else:
            self.fail(f"{what}: {why}" if why else what)
        return condition


# ---------------------------------------------------------------------------------------------
# What the agentwire binary accepts, read from its --help output (CLI11 format).

OPTION_LINE = re.compile(r"^  (?:-\w,)?(--[A-Za-z0-9][\w-]*)((?:,(?:-\w|--[\w-]+))*)( [A-Z]\S*)?")
ENV_NAME = re.compile(r"\(Env:([A-Z0-9_]+)\)")


class CommandHelp:
    def __init__(self, path, text):
        self.path = path  # e.g. ["emit", "simulate"]
        self.options = {}  # "--flag" -> takes a value
        self.subcommands = set()
        # Variables it reads: CLI11's "(Env:NAME)", or a name its help text mentions (for
        # variables read without CLI11, such as Cloud Run's PORT).
        self.env = set(ENV_NAME.findall(text)) | set(re.findall(r"\b(AGENTWIRE_[A-Z0-9_]+|PORT)\b",
                                                               text))
        self.positionals = False
        section = None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.endswith(":") and not line.startswith(" "):
                section = stripped[:-1].lower()
                continue
            if section == "options":
                match = OPTION_LINE.match(line)
                if match:
                    takes_value = match.group(3) is not None
                    names = [match.group(1)] + [
                        n for n in match.group(2).split(",") if n.startswith("--")
                    ]
                    for name in names:
                        self.options[name] = takes_value
            elif section == "subcommands":
                match = re.match(r"^  (\S+)", line)
                if match:
                    self.subcommands.add(match.group(1))
            elif section == "positionals":
                if re.match(r"^  \S", line):
                    self.positionals = True


class Agentwire:
    """Runs `agentwire [path] --help` once per command path and caches the parsed result."""

    def __init__(self, binary):
        self.binary = binary
        self.cache = {}

    def help(self, path):
        key = tuple(path)
        if key not in self.cache:
            result = subprocess.run(
                [self.binary, *path, "--help"],
                capture_output=True, text=True, timeout=30, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"`agentwire {' '.join([*path, '--help'])}` exited {result.returncode}: "
                    f"{(result.stderr or result.stdout).strip()[:200]}")
            self.cache[key] = CommandHelp(list(path), result.stdout)
        return self.cache[key]

    def all_env(self):
        """Every variable any subcommand reads (walks the whole command tree)."""
        names = set()
        stack = [[]]
        while stack:
            path = stack.pop()
            command = self.help(path)
            names |= command.env
            stack.extend([*path, sub] for sub in sorted(command.subcommands))
        return names

    def check_command(self, report, where, argv):
        """argv without the program name, e.g. ["gateway", "--drain-grace", "10s"]."""
        shown = "agentwire " + " ".join(shlex.quote(str(a)) for a in argv)
        argv = [str(a) for a in argv]
        if not argv:
            report.fail(f"{where}: empty agentwire command (the image's default is --help)")
            return
        path = []
        command = self.help(path)
        index = 0
        while index < len(argv) and argv[index] in command.subcommands:
            path.append(argv[index])
            command = self.help(path)
            index += 1
        if not path:
            report.fail(f"{where}: `{shown}`: '{argv[0]}' is not an agentwire subcommand "
                        f"(agentwire --help lists: {', '.join(sorted(command.subcommands))})")
            return
        problems = []
        while index < len(argv):
            token = argv[index]
            index += 1
            if token.startswith("--"):
                name, has_inline_value = token.split("=", 1)[0], "=" in token
                if name not in command.options:
                    problems.append(f"unknown flag {name} (agentwire {' '.join(path)} --help "
                                    f"lists: {', '.join(sorted(command.options))})")
                    continue
                if command.options[name] and not has_inline_value:
                    if index >= len(argv) or argv[index].startswith("--"):
                        problems.append(f"flag {name} needs a value")
                    else:
                        index += 1
                elif not command.options[name] and has_inline_value:
                    problems.append(f"flag {name} takes no value")
            elif token in command.subcommands:
                problems.append(f"subcommand '{token}' must come before the flags")
            elif not command.positionals:
                problems.append(f"unexpected argument '{token}' "
                                f"(agentwire {' '.join(path)} takes no positional arguments)")
        if problems:
            for problem in problems:
                report.fail(f"{where}: `{shown}`: {problem}")
        else:
            report.ok(f"{where}: `{shown}` matches agentwire {' '.join(path)} --help")


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore

def read_dockerignore(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    patterns = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def ignored(relative, patterns):
    """Whether `relative` (or a parent directory of it) matches a .dockerignore pattern."""
    result = False
    parts = relative.strip("/").split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatch(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(parts[depth - 1], pattern[3:])):
                result = not negate
                break
    return result


def dockerfile_instructions(path):
    """(instruction, arguments) pairs with line continuations joined and comments dropped."""
    instructions = []
    pending = ""
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if not pending and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip():
                word, _, rest = line.strip().partition(" ")
                instructions.append((word.upper(), rest.strip()))
    return instructions


def check_dockerfile(report, root, context, dockerfile, binary):
    where = os.path.relpath(dockerfile, root)
    instructions = dockerfile_instructions(dockerfile)
    patterns = read_dockerignore(context)
    stages = [args for word, args in instructions if word == "FROM"]
    report.check(len(stages) >= 2, f"{where}: multi-stage build", f"{len(stages)} FROM lines")
    report.check(all(re.match(r"debian:12\b", s) for s in stages),
                 f"{where}: every stage is Debian 12", f"FROM {stages}")

    for word, args in instructions:
        if word not in ("COPY", "ADD") or "--from=" in args:
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for source in words[:-1]:
            if source == ".":
                continue
            exists = os.path.exists(os.path.join(context, source))
            report.check(exists and not ignored(source, patterns),
                         f"{where}: COPY source {source} is in the build context",
                         "missing" if not exists else "excluded by .dockerignore")

    for word, args in instructions:
        if word == "RUN":
            for script in re.findall(r"\b(scripts/[\w./-]+\.sh)", args):
                report.check(os.path.exists(os.path.join(context, script)),
                             f"{where}: RUN uses {script}", "missing")
            if "--build-only" in args:
                with open(os.path.join(context, "scripts/bootstrap.sh"), encoding="utf-8") as f:
                    report.check("--build-only" in f.read(),
                                 f"{where}: scripts/bootstrap.sh accepts --build-only")

    final = []
    for word, args in instructions:
        if word == "FROM":
            final = []
        final.append((word, args))
    users = [args for word, args in final if word == "USER"]
    report.check(bool(users) and users[-1].split(":")[0] not in ("root", "0"),
                 f"{where}: runtime stage runs as a non-root user", f"USER {users}")
    entry = [args for word, args in final if word == "ENTRYPOINT"]
    report.check(bool(entry) and "agentwire" in entry[-1],
                 f"{where}: ENTRYPOINT is agentwire", f"{entry}")
    report.check(any(word == "EXPOSE" and "8080" in args for word, args in final),
                 f"{where}: EXPOSE 8080")

    # Every library the binary needs must be installed by the runtime stage. The binary was
    # built on this Debian 12 machine against the same packages the image uses.
    installed = set()
    for word, args in final:
        if word == "RUN" and "apt-get install" in args:
            installed |= set(re.findall(r"\b(lib[\w.+-]+|ca-certificates|curl)\b", args))
    check_runtime_libraries(report, where, binary, installed)


def check_runtime_libraries(report, where, binary, installed):
    try:
        needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                                check=True).stdout
        resolved = subprocess.run(["ldd", binary], capture_output=True, text=True,
                                  check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        report.ok(f"{where}: runtime libraries not checked (readelf/ldd unavailable: {error})")
        return
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", resolved, re.M))
    # Part of every Debian image (priority required), never installed explicitly.
    base = {"libc6", "libstdc++6", "libgcc-s1", "zlib1g"}
    for library in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed):
        path = paths.get(library)
        if not path:
            report.fail(f"{where}: {library} does not resolve on this machine")
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True,
                               text=True, check=False)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True,
                                   check=False)
        package = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else ""
        if not package:
            report.ok(f"{where}: {library} ({path}) belongs to no Debian package; not checked")
            continue
        report.check(package in installed or package in base,
                     f"{where}: runtime stage installs {package} (for {library})",
                     "add it to the runtime apt-get install line")


# ---------------------------------------------------------------------------------------------
# compose

def as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def env_names(environment):
    if isinstance(environment, dict):
        return set(environment)
    return {str(item).split("=", 1)[0] for item in environment or []}


def bind_mounts(service, compose_dir):
    """(host path, container path) for every bind mount; named volumes are skipped."""
    mounts = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((os.path.normpath(os.path.join(compose_dir, volume["source"])),
                               volume["target"]))
            continue
        parts = str(volume).split(":")
        if len(parts) >= 2 and (parts[0].startswith(".") or parts[0].startswith("/")
                                or parts[0].startswith("~")):
            mounts.append((os.path.normpath(os.path.join(compose_dir, parts[0])), parts[1]))
    return mounts


def named_volumes(service):
    names = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                names.append(volume.get("source"))
            continue
        source = str(volume).split(":")[0]
        if not (source.startswith(".") or source.startswith("/") or source.startswith("~")):
            names.append(source)
    return names


def is_agentwire(service):
    return str(service.get("image", "")).split(":")[0].endswith("agentwire") or (
        isinstance(service.get("build"), dict)
        and os.path.basename(service["build"].get("dockerfile", "Dockerfile")) == "Dockerfile")


def check_compose(report, root, path, agentwire, binary, used_env):
    where = os.path.relpath(path, root)
    compose_dir = os.path.dirname(path)
    with open(path, encoding="utf-8") as handle:
        compose = yaml.safe_load(handle)
    report.ok(f"{where}: parses as YAML")
    services = compose.get("services") or {}
    report.check(bool(services), f"{where}: defines services")
    declared_volumes = set((compose.get("volumes") or {}).keys())
    checked_dockerfiles = set()

    for name, service in services.items():
        label = f"{where}: service {name}"
        health = service.get("healthcheck")
        report.check(isinstance(health, dict) and health.get("test")
                     and not health.get("disable") and health.get("test") != ["NONE"],
                     f"{label} has a health check", "add a healthcheck with a test")

        build = service.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = os.path.normpath(os.path.join(compose_dir, build.get("context", ".")))
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if report.check(os.path.isdir(context), f"{label}: build context "
                            f"{os.path.relpath(context, root) or '.'} exists", "missing"):
                if report.check(os.path.isfile(dockerfile), f"{label}: "
                                f"{os.path.relpath(dockerfile, root)} exists", "missing"):
                    if dockerfile not in checked_dockerfiles:
                        checked_dockerfiles.add(dockerfile)
                        check_dockerfile(report, root, context, dockerfile, binary)

        mounts = bind_mounts(service, compose_dir)
        for host, container in mounts:
            report.check(os.path.exists(host), f"{label}: mounts "
                         f"{os.path.relpath(host, root)} at {container}", "missing in the repo")
        for volume in named_volumes(service):
            report.check(volume in declared_volumes, f"{label}: volume {volume} is declared",
                         "add it under the top-level volumes:")

        # Scripts the container runs from a bind mount must exist in the repo.
        for word in as_list(service.get("entrypoint")) + as_list(service.get("command")):
            for host, container in mounts:
                if word.startswith(container.rstrip("/") + "/"):
                    target = os.path.join(host, word[len(container.rstrip("/")) + 1:])
                    report.check(os.path.isfile(target), f"{label}: runs {word} = "
                                 f"{os.path.relpath(target, root)}", "missing in the repo")

        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for other, spec in depends.items():
            condition = (spec or {}).get("condition", "service_started")
            if not report.check(other in services, f"{label}: depends on {other}",
                                "no such service"):
                continue
            if condition == "service_healthy":
                report.check(bool(services[other].get("healthcheck")),
                             f"{label}: {other} can become healthy", "it has no healthcheck")
            elif condition == "service_completed_successfully":
                report.check(services[other].get("restart", "no") in ("no", False),
                             f"{label}: {other} is a one-shot job", "it restarts, so it never "
                             "completes; set restart: \"no\"")

        if is_agentwire(service):
            agentwire.check_command(report, label, as_list(service.get("command")))
            used_env.update((label, n) for n in env_names(service.get("environment")))
    return compose


def check_nginx(report, root, path, services):
    where = os.path.relpath(path, root)
    with open(path, encoding="utf-8") as handle:
        text = re.sub(r"#.*", "", handle.read())
    report.check(text.count("{") == text.count("}"), f"{where}: braces balance")
    for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", text, re.M):
        report.check(host in services, f"{where}: upstream {host}:{port} is a compose service",
                     "no such service")
    report.check(re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", text) is not None,
                 f"{where}: forwards the WebSocket Upgrade header")
    report.check(re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade", text)
                 is not None, f"{where}: forwards Connection: upgrade")
    report.check(re.search(r"proxy_http_version\s+1\.1", text) is not None,
                 f"{where}: speaks HTTP/1.1 upstream (WebSocket needs it)")
    check_nginx_logs(report, where, text)
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s?", text)
    report.check(timeout is not None and int(timeout.group(1)) >= 300,
                 f"{where}: proxy_read_timeout keeps idle WebSockets open",
                 f"{timeout.group(0) if timeout else 'not set'} (nginx default 60s)")


# nginx variables that carry the query string, where browser clients put access_token=.
QUERY_VARIABLES = re.compile(r"\$(request|request_uri|args|query_string|is_args|arg_\w+)\b")


def check_nginx_logs(report, where, text):
    """Tokens out of logs: every access_log names a log_format without the query string."""
    formats = {}
    for name, body in re.findall(r"log_format\s+(\w+)\s+((?:'[^']*'\s*)+);", text):
        formats[name] = "".join(re.findall(r"'([^']*)'", body))
    logs = re.findall(r"access_log\s+([^;]+);", text)
    report.check(bool(logs), f"{where}: has an access_log", "none")
    for args in logs:
        parts = args.split()
        if parts[0] == "off":
            continue
        name = parts[1] if len(parts) > 1 and "=" not in parts[1] else "combined"
        report.check(name in formats,
                     f"{where}: access_log {parts[0]} uses a log_format defined here",
                     f"'{name}' is nginx's built-in format, which logs $request with the "
                     "query string (access_token=)")
        if name in formats:
            leaked = QUERY_VARIABLES.search(formats[name])
            report.check(leaked is None,
                         f"{where}: log_format {name} leaves out the query string",
                         f"it logs {leaked.group(0) if leaked else ''}, which holds access_token=")


def read_topics_env(path):
    values = {}
    with open(path, encoding="utf-8") as handle:
        for name, value in re.findall(r'^:\s+"\$\{(\w+):=([^}]*)\}"', handle.read(), re.M):
            values[name] = value
    return values


def check_kafka(report, root, compose):
    kafka_dir = os.path.join(root, "infra/kafka")
    for name in ("create-topics.sh", "topics.env"):
        report.check(os.path.isfile(os.path.join(kafka_dir, name)),
                     f"infra/kafka/{name} exists", "missing")
    script = os.path.join(kafka_dir, "create-topics.sh")
    if os.path.isfile(script):
        result = subprocess.run(["sh", "-n", script], capture_output=True, text=True,
                                check=False)
        report.check(result.returncode == 0, "infra/kafka/create-topics.sh is valid POSIX sh",
                     result.stderr.strip())
    env_path = os.path.join(kafka_dir, "topics.env")
    if not os.path.isfile(env_path):
        return
    topics = read_topics_env(env_path)
    for key, expected in (("TOPIC", "agent.lifecycle.v1"), ("PARTITIONS", "12"),
                          ("REPLICATION_FACTOR", "3"), ("MIN_INSYNC_REPLICAS", "2"),
                          ("COMPRESSION_TYPE", "lz4"), ("CLEANUP_POLICY", "delete")):
        report.check(topics.get(key) == expected, f"infra/kafka/topics.env: {key}={expected}",
                     f"found {topics.get(key)!r}")
    retention = int(topics.get("RETENTION_MS", "0") or 0)
    dlq_retention = int(topics.get("DLQ_RETENTION_MS", "0") or 0)
    report.check(retention >= 7 * 24 * 3600 * 1000, "infra/kafka/topics.env: retention >= 7 days",
                 f"{retention} ms")
    report.check(dlq_retention > retention, "infra/kafka/topics.env: the DLQ keeps data longer",
                 f"{dlq_retention} <= {retention}")
    services = compose.get("services") or {}
    brokers = [s for s in services.values()
               if str(s.get("image", "")).startswith("apache/kafka")
               and "KAFKA_NODE_ID" in (s.get("environment") or {})]
    replication = int(topics.get("REPLICATION_FACTOR", "0") or 0)
    min_isr = int(topics.get("MIN_INSYNC_REPLICAS", "0") or 0)
    report.check(len(brokers) >= replication,
                 f"infra/compose.yaml: {len(brokers)} Kafka brokers >= replication factor "
                 f"{replication}")
    report.check(0 < min_isr < replication,
                 f"infra/kafka/topics.env: min.insync.replicas {min_isr} < RF {replication} "
                 "(one broker can fail)")
    for broker in brokers:
        env = broker.get("environment") or {}
        report.check(str(env.get("KAFKA_MIN_INSYNC_REPLICAS")) == str(min_isr)
                     and str(env.get("KAFKA_DEFAULT_REPLICATION_FACTOR")) == str(replication),
                     f"infra/compose.yaml: broker {env.get('KAFKA_NODE_ID')} defaults match "
                     "topics.env (RF, min ISR)")
    sql = os.path.join(root, "infra/sql")
    migrations = sorted(f for f in os.listdir(sql) if f.endswith(".sql")) \
        if os.path.isdir(sql) else []
    report.check(bool(migrations), f"infra/sql has migrations for --migrate ({len(migrations)})",
                 "missing")


# ---------------------------------------------------------------------------------------------
# Cloud Run

def check_cloudrun(report, root, path, agentwire, used_env):
    where = os.path.relpath(path, root)
    with open(path, encoding="utf-8") as handle:
        documents = [d for d in yaml.safe_load_all(handle) if d]
    report.check(bool(documents), f"{where}: parses as YAML")
    for document in documents:
        name = (document.get("metadata") or {}).get("name", "?")
        label = f"{where}: {name}"
        report.check(document.get("apiVersion") == "serving.knative.dev/v1"
                     and document.get("kind") == "Service", f"{label} is a Knative Service")
        template = (document.get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        spec = template.get("spec") or {}
        containers = spec.get("containers") or []
        if not report.check(len(containers) == 1, f"{label} has one container"):
            continue
        container = containers[0]
        args = as_list(container.get("args"))
        agentwire.check_command(report, label, args)
        env = {e.get("name") for e in container.get("env") or []}
        used_env.update((label, n) for n in env)
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                report.check(bool(ref.get("name")) and bool(ref.get("key")),
                             f"{label}: {item.get('name')} comes from Secret Manager")
        ports = [p.get("containerPort") for p in container.get("ports") or []]
        min_scale = int(annotations.get("autoscaling.knative.dev/minScale", "0"))
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if probe and "httpGet" in probe:
                report.check(probe["httpGet"].get("port") in ports, f"{label}: {probe_name} "
                             f"port {probe['httpGet'].get('port')} is the container port {ports}")
        mounts = {m.get("name") for m in container.get("volumeMounts") or []}
        volumes = {v.get("name") for v in spec.get("volumes") or []}
        report.check(mounts <= volumes, f"{label}: every volumeMount has a volume",
                     f"missing {sorted(mounts - volumes)}")

        command = args[0] if args else ""
        if command == "gateway":
            report.check(spec.get("timeoutSeconds") == 3600,
                         f"{label}: timeoutSeconds 3600 (WebSockets live up to an hour)",
                         f"found {spec.get('timeoutSeconds')}")
            report.check(isinstance(spec.get("containerConcurrency"), int)
                         and 1 <= spec["containerConcurrency"] <= 1000,
                         f"{label}: containerConcurrency set (1..1000)")
            report.check(min_scale >= 2, f"{label}: at least 2 instances always up",
                         f"minScale {min_scale}")
            readiness = ((container.get("readinessProbe") or {}).get("httpGet") or {})
            report.check(readiness.get("path") == "/readyz", f"{label}: readiness probe /readyz")
            report.check(((container.get("startupProbe") or {}).get("httpGet") or {})
                         .get("path") == "/healthz", f"{label}: startup probe /healthz")
            report.check("run.googleapis.com/sessionAffinity" in annotations,
                         f"{label}: session affinity stated (optional; correctness does not "
                         "depend on it)")
            drain = None
            if "--drain-grace" in args and args.index("--drain-grace") + 1 < len(args):
                drain = args[args.index("--drain-grace") + 1]
            seconds = float(re.sub(r"s$", "", drain)) if drain and re.fullmatch(
                r"\d+(\.\d+)?s?", drain) else None
            report.check(seconds is not None and seconds < 10,
                         f"{label}: --drain-grace below Cloud Run's fixed 10 s SIGTERM grace",
                         f"found {drain}")
        elif command in ("archive", "analytics"):
            report.check(annotations.get("run.googleapis.com/cpu-throttling") == "false",
                         f"{label}: always-on CPU (cpu-throttling \"false\")")
            report.check(min_scale >= 1, f"{label}: min instances >= 1", f"minScale {min_scale}")


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the built agentwire executable")
    parser.add_argument("--root", required=True, help="the repository root")
    options = parser.parse_args()
    root = os.path.abspath(options.root)
    report = Report()
    agentwire = Agentwire(options.binary)
    used_env = set()

    try:
        compose_path = os.path.join(root, "infra/compose.yaml")
        compose = {}
        if report.check(os.path.isfile(compose_path), "infra/compose.yaml exists"):
            compose = check_compose(report, root, compose_path, agentwire, options.binary,
                                    used_env)
            nginx = os.path.join(root, "infra/nginx.conf")
            if report.check(os.path.isfile(nginx), "infra/nginx.conf exists"):
                check_nginx(report, root, nginx, compose.get("services") or {})
        check_kafka(report, root, compose)

        cloudrun = os.path.join(root, "infra/cloudrun")
        for name in ("gateway.yaml", "consumers.yaml"):
            path = os.path.join(cloudrun, name)
            if report.check(os.path.isfile(path), f"infra/cloudrun/{name} exists"):
                check_cloudrun(report, root, path, agentwire, used_env)

        known = agentwire.all_env()
        places = {}
        for where, name in sorted(used_env):
            if name.startswith("AGENTWIRE_") or name == "PORT":
                places.setdefault(name, []).append(where)
        for name, wheres in sorted(places.items()):
            report.check(name in known, f"{name} (set {len(wheres)}x, e.g. {wheres[0]}) is read "
                         "by agentwire", "no subcommand mentions it in --help (a typo, or not "
                         "implemented yet)")
    except (RuntimeError, OSError, yaml.YAMLError, subprocess.TimeoutExpired) as error:
        report.fail(f"validation stopped: {error}")

    print()
    if report.failures:
        print(f"validate_compose: {len(report.failures)} of {report.checks} checks FAILED:")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print(f"validate_compose: all {report.checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
