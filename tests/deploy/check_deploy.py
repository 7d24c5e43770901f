#!/usr/bin/python3
"""Static checks of deploy/ against a whipgate binary (run through tests/deploy/check.sh).

    check_deploy.py WHIPGATE_BIN [PROMTOOL]

No container engine or cluster is needed: every file is parsed and cross-checked, the routes
files go through `whipgate check --skip-secrets`, command lines are checked against `--help`,
metric names against `whipgate metrics`, and (with PROMTOOL) the PromQL of the alert rules and
the dashboard against promtool. Prints `ok - ...` / `not ok - ...` per check and ends with
`N passed, M failed`; exits 1 when anything failed.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")

# FALLBACK for whipgate binaries built before `whipgate metrics` existed: the names of
# src/metrics.rs' registry. Delete this list and the branch of metric_names() that uses it once
# every binary this script runs against has the subcommand.
FALLBACK_METRICS = [
    "whipgate_backend_healthy",
    "whipgate_config_generation",
    "whipgate_config_reloads_total",
    "whipgate_cost_estimate_total",
    "whipgate_failovers_total",
    "whipgate_request_duration_seconds",
    "whipgate_requests_total",
    "whipgate_sdp_rejections_total",
    "whipgate_session_duration_seconds",
    "whipgate_session_seconds_total",
    "whipgate_sessions_ended_total",
    "whipgate_sessions_live",
    "whipgate_sessions_started_total",
    "whipgate_upstream_duration_seconds",
    "whipgate_upstream_requests_total",
]

# Series Prometheus makes itself: not whipgate's to export.
PROMETHEUS_BUILTINS = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2", "sum", "min", "max", "avg", "group", "stddev", "stdvar",
    "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

passed = 0
failed = 0


def ok(message):
    global passed
    passed += 1
    print(f"ok - {message}")


def not_ok(message, details=()):
    global failed
    failed += 1
    print(f"not ok - {message}")
    for line in details:
        for part in str(line).rstrip("\n").split("\n"):
            if part.strip():
                print(f"  # {part}")


def check(condition, message, details=()):
    if condition:
        ok(message)
    else:
        not_ok(message, details)
    return condition


def note(message):
    print(f"# {message}")


def rel(path):
    return os.path.relpath(path, ROOT)


def run(argv, **kwargs):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(argv, 127, "", str(error))


# ------------------------------------------------------------------ small parsers

DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text):
    """A humantime / compose duration ("10s", "1m30s", "500ms") in seconds, or None."""
    text = str(text).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", "", text).strip():
        return None
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def listen_port(routes):
    listen = routes.get("server", {}).get("listen", "0.0.0.0:8080")
    match = re.search(r":(\d+)$", listen)
    return int(match.group(1)) if match else None


def env_refs(node):
    """NAME of every `*_env = "NAME"` anywhere in a parsed routes.toml."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_env") and isinstance(value, str):
                found.add(value)
            else:
                found |= env_refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= env_refs(item)
    return found


def help_flags(bin_path, subcommand):
    """{flag: (takes_value, possible_values)} from `whipgate SUBCOMMAND --help`, or None."""
    result = run([bin_path, subcommand, "--help"])
    if result.returncode != 0:
        return None
    flags = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^\s+(?:(-\w),\s+)?(--[\w-]+)(?:[ =]<([^>]+)>)?(.*)$", line)
        if not match:
            continue
        short, long, value, rest = match.groups()
        possible = re.search(r"\[possible values: ([^\]]+)\]", rest)
        spec = (value is not None, [v.strip() for v in possible.group(1).split(",")] if possible else None)
        flags[long] = spec
        if short:
            flags[short] = spec
    return flags


def check_args(args, flags, positionals=0):
    """Problems with ARGS (after the subcommand) for FLAGS, and the values given."""
    problems, values, seen_positionals = [], {}, 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            name, eq, inline = arg.partition("=")
            if name not in flags:
                problems.append(f"unknown flag {name}")
                i += 1
                continue
            takes_value, possible = flags[name]
            if takes_value:
                if eq:
                    value = inline
                elif i + 1 < len(args):
                    i += 1
                    value = args[i]
                else:
                    problems.append(f"{name} needs a value")
                    break
                if possible and value not in possible:
                    problems.append(f"{name} {value}: not one of {', '.join(possible)}")
                values[name] = value
            elif eq:
                problems.append(f"{name} takes no value")
        else:
            seen_positionals += 1
            if seen_positionals > positionals:
                problems.append(f"unexpected argument {arg}")
        i += 1
    return problems, values


def config_value(values):
    return values.get("--config", values.get("-c"))


def whipgate_check(bin_path, text, label):
    """`whipgate check --skip-secrets` on TEXT (as routes.toml): a check line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "routes.toml")
        with open(path, "w") as handle:
            handle.write(text)
        result = run([bin_path, "check", "--skip-secrets", path])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    details = [f"exit {result.returncode}"] + (result.stdout + result.stderr).replace(path, label).splitlines()
    good = result.returncode == 0 and len(lines) == 1 and not result.stderr.strip()
    summary = lines[0].replace(path, label) if lines else ""
    check(good, f"{label} passes `whipgate check --skip-secrets`" + (f" ({summary})" if good else ""),
          details)


def dockerfile_final_stage(path):
    """[(INSTRUCTION, rest)] of the last stage, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    with open(path) as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                instructions.append((word.upper(), rest.strip()))
            current = ""
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


# ------------------------------------------------------------------ PromQL

def promql_metric_names(expr):
    """Metric names selected by a PromQL expression (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"`[^`]*`", "``", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # 1h, 1e3
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if token.lower() in PROMQL_WORDS:
            continue
        names.add(token)
    return names


def grafana_query_names(query):
    """Metric names in a Grafana Prometheus variable query."""
    query = query.strip()
    match = re.match(r"^label_values\((.*),\s*[A-Za-z_]\w*\s*\)$", query, re.S)
    if match:
        return promql_metric_names(match.group(1))
    if re.match(r"^(label_values|label_names|metrics)\(", query):
        return set()
    match = re.match(r"^query_result\((.*)\)$", query, re.S)
    return promql_metric_names(match.group(1) if match else query)


def dashboard_queries(dashboard):
    """(where, expr) of every PromQL query of a dashboard: panels, annotations, variables."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title") or node.get("name") or where
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                found.append((f"{title} {node.get('refId', '')}".strip(), node["expr"]))
            for key, value in node.items():
                if key != "templating":
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dashboard, "dashboard")
    return found


def dashboard_variable_queries(dashboard):
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.strip():
            found.append((f"variable {variable.get('name')}", query))
    return found


def grafana_to_promql(expr):
    """Grafana's range variables replaced so that promtool can parse the expression."""
    for variable, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "6h"),
                            ("${__rate_interval}", "5m"), ("${__interval}", "1m"), ("${__range}", "6h")):
        expr = expr.replace(variable, value)
    return expr


# ------------------------------------------------------------------ checks

def check_parsing():
    """Every .yml/.yaml/.json/.toml under deploy/ parses; {relative path: parsed}."""
    parsed = {}
    for directory, dirs, files in os.walk(DEPLOY):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                if name.endswith((".yml", ".yaml")):
                    with open(path) as handle:
                        docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
                    if not docs:
                        raise ValueError("no document")
                    parsed[rel(path)] = docs
                    ok(f"{rel(path)} parses as YAML ({len(docs)} document{'s' if len(docs) > 1 else ''})")
                elif name.endswith(".json"):
                    with open(path) as handle:
                        parsed[rel(path)] = json.load(handle)
                    ok(f"{rel(path)} parses as JSON")
                elif name.endswith(".toml"):
                    with open(path, "rb") as handle:
                        parsed[rel(path)] = tomllib.load(handle)
                    ok(f"{rel(path)} parses as TOML")
            except Exception as error:  # noqa: BLE001 - any parse error is the finding
                not_ok(f"{rel(path)} parses", [error])
    return parsed


def k8s_objects(parsed):
    objects = {}
    for path, docs in parsed.items():
        if not path.startswith("deploy/k8s/") or path.endswith("kustomization.yaml"):
            continue
        for doc in docs:
            if isinstance(doc, dict) and "kind" in doc:
                objects.setdefault(doc["kind"], []).append((path, doc))
    return objects


def metric_names(bin_path):
    """(set of names, where they came from)."""
    result = run([bin_path, "metrics"])
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 0 and names and all(re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", n) for n in names):
        note(f"metric names: {len(names)} from `whipgate metrics`")
        return set(names), "`whipgate metrics`"
    reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[0]
    note(f"`whipgate metrics` failed ({reason}): using FALLBACK_METRICS of {rel(__file__)}, "
         "the names of src/metrics.rs (delete the fallback once every binary has the subcommand)")
    return set(FALLBACK_METRICS), "the FALLBACK list"


def unknown_metrics(used, known):
    unknown = set()
    for name in used:
        if name in PROMETHEUS_BUILTINS or name in known:
            continue
        if any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES):
            continue
        unknown.add(name)
    return unknown


def base_name(name, known):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


def check_metrics(bin_path, parsed):
    known, source = metric_names(bin_path)
    dashboard = parsed.get("deploy/grafana/whipgate-dashboard.json")
    alerts = parsed.get("deploy/prometheus/alerts.yml")
    if dashboard is not None:
        queries = dashboard_queries(dashboard)
        used = set()
        for _, expr in queries:
            used |= promql_metric_names(expr)
        for _, query in dashboard_variable_queries(dashboard):
            used |= grafana_query_names(query)
        unknown = unknown_metrics(used, known)
        check(queries and not unknown,
              f"dashboard: the {len(used)} metric names of its {len(queries)} queries are all in {source}",
              [f"not exported by whipgate: {', '.join(sorted(unknown))}"] if unknown else ["no PromQL query found"])
        shown = {base_name(n, known) for n in used}
        unshown = known - shown
        check(not unshown, f"dashboard: every metric in {source} is on a panel",
              [f"on no panel: {', '.join(sorted(unshown))}"])
    if alerts is not None:
        rules = [r for g in alerts[0].get("groups", []) for r in g.get("rules", [])]
        used = set()
        for rule in rules:
            used |= promql_metric_names(str(rule.get("expr", "")))
        unknown = unknown_metrics(used, known)
        check(rules and not unknown,
              f"alerts.yml: the {len(used)} metric names of its {len(rules)} rules are all in {source}",
              [f"not exported by whipgate: {', '.join(sorted(unknown))}"] if unknown else ["no rule found"])


def check_alert_rules(parsed):
    alerts = parsed.get("deploy/prometheus/alerts.yml")
    if alerts is None:
        not_ok("deploy/prometheus/alerts.yml exists")
        return
    problems, names = [], []
    for group in alerts[0].get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not name:
                problems.append(f"a rule of group {group.get('name')} has no `alert`")
                continue
            names.append(name)
            if rule.get("for") is not None and seconds(rule["for"]) is None:
                problems.append(f"{name}: `for: {rule['for']}` is not a duration")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problems.append(f"{name}: labels.severity should be critical, warning or info")
            for key in ("summary", "description"):
                if not rule.get("annotations", {}).get(key):
                    problems.append(f"{name}: no annotations.{key}")
    if len(set(names)) != len(names):
        problems.append("alert names repeat")
    check(names and not problems, f"alerts.yml: {len(names)} alerts, each with severity, summary and description",
          problems)
    wanted = {
        "whipgate down (up == 0)": lambda e: re.search(r"\bup\b", e) and "== 0" in e,
        "no healthy backend": lambda e: "whipgate_backend_healthy" in e and "instance" in e,
        "backend unhealthy": lambda e: "whipgate_backend_healthy" in e and "backend" in e,
        "high 5xx ratio": lambda e: "whipgate_requests_total" in e and "5.." in e,
        "high failover rate": lambda e: "whipgate_failovers_total" in e,
        "config reload failing": lambda e: "whipgate_config_reloads_total" in e and "error" in e,
        "p99 latency high": lambda e: "histogram_quantile(0.99" in e.replace(" ", ""),
    }
    exprs = [str(r.get("expr", "")) for g in alerts[0].get("groups", []) for r in g.get("rules", [])]
    missing = [what for what, test in wanted.items() if not any(test(e) for e in exprs)]
    check(not missing, "alerts.yml covers: " + ", ".join(wanted), [f"no rule for: {m}" for m in missing])
    rule_objects = parsed.get("deploy/k8s/prometheusrule.yaml", [])
    if rule_objects:
        check(rule_objects[0].get("spec", {}).get("groups") == alerts[0].get("groups"),
              "k8s/prometheusrule.yaml holds the same groups as prometheus/alerts.yml",
              ["regenerate it from prometheus/alerts.yml"])


def check_dashboard(parsed):
    dashboard = parsed.get("deploy/grafana/whipgate-dashboard.json")
    if dashboard is None:
        not_ok("deploy/grafana/whipgate-dashboard.json exists")
        return
    check(isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36,
          f"dashboard: schemaVersion {dashboard.get('schemaVersion')} >= 36")
    panels = dashboard.get("panels", [])
    problems = []
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append("panel ids missing or repeated")
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    for panel in panels:
        title = panel.get("title", "?")
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24 or not grid.get("h"):
            problems.append(f"{title}: gridPos outside the 24 columns or without height")
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"{title}: no query")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"{title}: refIds missing or repeated")
        for target in panel.get("targets", []) + [panel]:
            uid = (target.get("datasource") or {}).get("uid", "")
            var = re.fullmatch(r"\$\{?(\w+)\}?", uid or "")
            if var and var.group(1) not in variables:
                problems.append(f"{title}: data source variable {uid} is not defined")
    for where, expr in dashboard_queries(dashboard) + dashboard_variable_queries(dashboard):
        for var in re.findall(r"\$\{?(\w+)\}?", expr):
            if not var.startswith("__") and var not in variables:
                problems.append(f"{where}: ${var} is not a dashboard variable")
    check(panels and not problems,
          f"dashboard: {len([p for p in panels if p.get('type') != 'row'])} panels with unique ids, "
          "queries, defined variables and a 24-column layout", problems)
    text = json.dumps(dashboard)
    wanted = {
        "live sessions per backend": "sum by (backend) (whipgate_sessions_live",
        "session-minutes per backend": "rate(whipgate_session_seconds_total",
        "estimated cost per backend": "whipgate_cost_estimate_total",
        "requests by status": "sum by (status) (rate(whipgate_requests_total",
        "request latency p50/p99": "histogram_quantile(0.99, sum by (le, endpoint) (rate(whipgate_request_duration_seconds_bucket",
        "upstream latency by backend": "sum by (le, backend) (rate(whipgate_upstream_duration_seconds_bucket",
        "failovers by from/to/reason": "sum by (from, to, reason) (rate(whipgate_failovers_total",
        "config reloads and generation": "whipgate_config_generation",
        "SDP rejections by reason": "sum by (reason) (rate(whipgate_sdp_rejections_total",
        "backend health": "whipgate_backend_healthy",
    }
    missing = [what for what, needle in wanted.items() if needle not in text]
    check(not missing, "dashboard has panels for: " + ", ".join(wanted), [f"no query for: {m}" for m in missing])
    provisioning = parsed.get("deploy/grafana/provisioning/dashboards/whipgate.yml")
    datasources = parsed.get("deploy/grafana/provisioning/datasources/prometheus.yml")
    check(bool(provisioning) and bool(datasources)
          and any(d.get("type") == "prometheus" for d in datasources[0].get("datasources", [])),
          "grafana/provisioning: a dashboard provider and a Prometheus data source")


def check_kustomization(parsed, objects):
    kustomization = parsed.get("deploy/k8s/kustomization.yaml")
    if not kustomization:
        return
    resources = kustomization[0].get("resources", [])
    files = sorted(f for f in os.listdir(K8S) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
    missing = [r for r in resources if not os.path.exists(os.path.join(K8S, r))]
    unlisted = [f for f in files if f not in resources]
    check(not missing and not unlisted, f"k8s/kustomization.yaml lists every manifest ({len(resources)})",
          [f"missing file: {m}" for m in missing] + [f"not listed: {u}" for u in unlisted])
    kinds = ["ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
             "ServiceMonitor"]
    absent = [k for k in kinds if k not in objects]
    check(not absent, "k8s/ has " + ", ".join(kinds), [f"no {k}" for k in absent])


def resolve_port(port, container):
    """A probe's or Service's port (name or number) as the container's port number."""
    for spec in container.get("ports", []):
        if port == spec.get("name") or port == spec.get("containerPort"):
            return spec.get("containerPort")
    return None


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s(bin_path, objects, serve_flags):
    deployments = objects.get("Deployment", [])
    if len(deployments) != 1:
        not_ok(f"k8s/: exactly one Deployment (found {len(deployments)})")
        return
    path, deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod.get("metadata", {}).get("labels", {})
    containers = pod_spec.get("containers", [])
    container = next((c for c in containers if c.get("name") == "whipgate"), containers[0] if containers else None)
    if container is None:
        not_ok(f"{path}: a container")
        return
    check(deployment["spec"].get("replicas") == 3, f"{path}: 3 replicas")
    check(labels_match(deployment["spec"].get("selector", {}).get("matchLabels"), pod_labels),
          f"{path}: the selector matches the pod template's labels")

    # Command line.
    args = container.get("args", [])
    command = container.get("command")
    problems, values = (["no serve flags from `whipgate serve --help`"], {}) if serve_flags is None else \
        check_args(args[1:], serve_flags)
    if command not in (None, ["whipgate"]):
        problems.append(f"command {command} overrides the image's ENTRYPOINT [\"whipgate\"]")
    check(args[:1] == ["serve"] and not problems,
          f"{path}: args `{' '.join(args)}` start with serve and use only `serve --help` flags", problems)

    # The routes come from a ConfigMap mounted as a directory at --config's folder.
    config_path = config_value(values) or "routes.toml"
    config_dir, config_file = os.path.split(config_path)
    volumes = {v.get("name"): v for v in pod_spec.get("volumes", [])}
    mount = next((m for m in container.get("volumeMounts", []) if m.get("mountPath", "").rstrip("/") == config_dir), None)
    configmap_name = (volumes.get(mount["name"], {}).get("configMap") or {}).get("name") if mount else None
    configmaps = {doc["metadata"]["name"]: (p, doc) for p, doc in objects.get("ConfigMap", [])}
    found = configmaps.get(configmap_name)
    routes_text = (found[1].get("data") or {}).get(config_file) if found else None
    check(routes_text is not None and mount and not mount.get("subPath"),
          f"{path}: --config {config_path} is key {config_file} of ConfigMap {configmap_name}, "
          f"mounted as the directory {config_dir} (no subPath, so updates reach whipgate)",
          [f"mount: {mount}", f"ConfigMap: {configmap_name} (have: {', '.join(configmaps)})"])
    if routes_text is None:
        return
    label = f"{found[0]} data[{config_file}]"
    whipgate_check(bin_path, routes_text, label)
    try:
        routes = tomllib.loads(routes_text)
    except tomllib.TOMLDecodeError as error:
        not_ok(f"{label} parses as TOML", [error])
        return

    # Port.
    port = listen_port(routes)
    if "--listen" in values:
        port = int(values["--listen"].rsplit(":", 1)[1])
    container_ports = [p.get("containerPort") for p in container.get("ports", [])]
    check(container_ports == [port], f"{path}: containerPort {container_ports} is routes.toml's listen port {port}")
    for kind, wanted in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = (container.get(kind) or {}).get("httpGet") or {}
        check(probe.get("path") == wanted and resolve_port(probe.get("port"), container) == port,
              f"{path}: {kind} GET {wanted} on port {port}",
              [f"{kind}: {container.get(kind)}"])

    # Secrets.
    referenced = env_refs(routes)
    env = {e.get("name"): e for e in container.get("env", [])}
    secrets = {doc["metadata"]["name"]: doc for _, doc in objects.get("Secret", [])}
    problems = []
    for name in sorted(referenced):
        ref = ((env.get(name) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            problems.append(f"{name}: not set from a Secret in the container's env")
            continue
        secret = secrets.get(ref.get("name"))
        keys = set((secret or {}).get("data") or {}) | set((secret or {}).get("stringData") or {})
        if secret is None:
            problems.append(f"{name}: Secret {ref.get('name')} is not in k8s/")
        elif ref.get("key") not in keys:
            problems.append(f"{name}: Secret {ref.get('name')} has no key {ref.get('key')}")
    check(referenced and not problems,
          f"{path}: every env var routes.toml names ({', '.join(sorted(referenced))}) comes from a Secret",
          problems)

    # Shutdown.
    grace = seconds(routes.get("server", {}).get("shutdown_grace", "10s"))
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {})
    sleep = 0
    command = (pre_stop.get("exec") or {}).get("command") or []
    if command[:1] == ["sleep"] and len(command) == 2:
        sleep = seconds(command[1] if not command[1].isdigit() else command[1] + "s") or 0
    sleep += (pre_stop.get("sleep") or {}).get("seconds", 0)
    termination = pod_spec.get("terminationGracePeriodSeconds", 30)
    check(grace is not None and termination > grace + sleep,
          f"{path}: terminationGracePeriodSeconds {termination} > preStop {sleep:g}s + shutdown_grace {grace:g}s")

    # Hardening and resources.
    pod_security = pod_spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    run_as = security.get("runAsUser", pod_security.get("runAsUser"))
    check((security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) and run_as not in (None, 0)
          and security.get("readOnlyRootFilesystem") is True and security.get("allowPrivilegeEscalation") is False,
          f"{path}: runs as non-root (uid {run_as}), read-only root filesystem, no privilege escalation")
    resources = container.get("resources") or {}
    check((resources.get("requests") or {}).get("cpu") and (resources.get("limits") or {}).get("memory"),
          f"{path}: CPU request (for the HPA) and memory limit set")

    # Service, ServiceMonitor, PDB, HPA.
    services = objects.get("Service", [])
    service_ok = False
    for spath, service in services:
        spec = service.get("spec", {})
        targets = [(p.get("name"), resolve_port(p.get("targetPort", p.get("port")), container)) for p in spec.get("ports", [])]
        service_ok = labels_match(spec.get("selector"), pod_labels) and any(t == port for _, t in targets)
        check(service_ok, f"{spath}: selects the pods and its targetPort is the container's port {port}",
              [f"ports (name, resolved target): {targets}", f"selector {spec.get('selector')} vs pod labels {pod_labels}"])
        for mpath, monitor in objects.get("ServiceMonitor", []):
            mspec = monitor.get("spec", {})
            names = {p.get("name") for p in spec.get("ports", [])}
            endpoints = mspec.get("endpoints", [])
            check(labels_match(mspec.get("selector", {}).get("matchLabels"), service.get("metadata", {}).get("labels", {}))
                  and endpoints and all(e.get("port") in names and e.get("path", "/metrics") == "/metrics" for e in endpoints),
                  f"{mpath}: selects Service {service['metadata']['name']}, port name "
                  f"{', '.join(str(e.get('port')) for e in endpoints)} is one of its ports, path /metrics",
                  [f"endpoints {endpoints}", f"Service port names {names}"])
    for ppath, pdb in objects.get("PodDisruptionBudget", []):
        check(labels_match(pdb.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels),
              f"{ppath}: selects the Deployment's pods")
    for hpath, hpa in objects.get("HorizontalPodAutoscaler", []):
        spec = hpa.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        cpu = any(m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu" for m in spec.get("metrics", []))
        check(hpa.get("apiVersion") == "autoscaling/v2" and target.get("kind") == "Deployment"
              and target.get("name") == deployment["metadata"]["name"] and cpu
              and 0 < spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0),
              f"{hpath}: autoscaling/v2 on CPU, scales Deployment {target.get('name')} "
              f"between {spec.get('minReplicas')} and {spec.get('maxReplicas')}")


def check_dockerfile(serve_flags, compose_port):
    path = os.path.join(DEPLOY, "Dockerfile")
    stage = dockerfile_final_stage(path)
    last = {}
    for word, rest in stage:
        last[word] = rest
    cmd = exec_form(last.get("CMD", ""))
    entrypoint = exec_form(last.get("ENTRYPOINT", ""))
    problems, values = (["no serve flags"], {}) if serve_flags is None else check_args((cmd or [])[1:], serve_flags)
    check(entrypoint == ["whipgate"] and cmd and cmd[0] == "serve" and not problems,
          f"deploy/Dockerfile: ENTRYPOINT {entrypoint}, CMD {cmd} uses only `serve --help` flags", problems)
    exposed = " ".join(rest for word, rest in stage if word == "EXPOSE").split()
    expose = [p for p in exposed if not p.endswith("/udp")]
    check(expose == [str(compose_port)], f"deploy/Dockerfile: EXPOSE {' '.join(expose)} is the listen port {compose_port}")
    udp = [p for p in exposed if p.endswith("/udp")]
    check(udp == ["8189/udp"], f"deploy/Dockerfile: EXPOSE {' '.join(udp)} is the built-in SFU's default UDP port")
    user = last.get("USER", "root").split(":")[0]
    check(user not in ("", "0", "root"), f"deploy/Dockerfile: runtime USER {user} is not root")
    health = last.get("HEALTHCHECK", "")
    if health:
        check("/healthz" in health and f"/{compose_port}" in health,
              f"deploy/Dockerfile: HEALTHCHECK asks /healthz on port {compose_port}")
    with open(path) as handle:
        text = handle.read()
    check("cargo build --release --locked --bin whipgate" in text and re.search(r"(?m)^FROM rust:1-bookworm", text)
          and re.search(r"(?m)^FROM debian:bookworm-slim", text),
          "deploy/Dockerfile: rust:1-bookworm builder (cargo build --release --locked), debian:bookworm-slim runtime")
    ignore = os.path.join(DEPLOY, "Dockerfile.dockerignore")
    copied = re.findall(r"(?m)^COPY\s+(?!--from)(.+?)\s+\S+$", text)
    sources = [s for line in copied for s in line.split()]
    missing = [s for s in sources if not os.path.exists(os.path.join(ROOT, s))]
    check(os.path.exists(ignore) and not missing,
          f"deploy/Dockerfile: COPY sources exist in the repository root ({', '.join(sources)}); "
          "Dockerfile.dockerignore keeps target/ out of the context", [f"missing: {m}" for m in missing])
    return cmd


def check_compose(bin_path, parsed, serve_flags, image_cmd):
    compose_path = "deploy/docker-compose.yml"
    compose = (parsed.get(compose_path) or [None])[0]
    routes_path = os.path.join(DEPLOY, "compose", "routes.toml")
    if not os.path.exists(routes_path):
        not_ok("deploy/compose/routes.toml exists")
        return
    with open(routes_path) as handle:
        whipgate_check(bin_path, handle.read(), "deploy/compose/routes.toml")
    routes = parsed.get("deploy/compose/routes.toml") or {}
    port = listen_port(routes)
    if not compose:
        not_ok(f"{compose_path} exists")
        return
    services = compose.get("services", {})
    wanted = ["whipgate", "janus", "whip-server", "prometheus", "grafana"]
    check(all(s in services for s in wanted), f"{compose_path}: services {', '.join(wanted)}",
          [f"have {', '.join(services)}"])
    service = services.get("whipgate", {})
    build = service.get("build", {})
    dockerfile = os.path.normpath(os.path.join(DEPLOY, build.get("context", "."), build.get("dockerfile", "Dockerfile")))
    check(dockerfile == os.path.join(DEPLOY, "Dockerfile") and os.path.normpath(os.path.join(DEPLOY, build.get("context", "."))) == ROOT,
          f"{compose_path}: whipgate is built from deploy/Dockerfile with the repository root as context")
    args = service.get("command") or image_cmd or []
    if isinstance(args, str):
        args = shlex.split(args)
    problems, values = check_args(args[1:], serve_flags) if serve_flags is not None else (["no serve flags"], {})
    check(args[:1] == ["serve"] and not problems,
          f"{compose_path}: whipgate runs `{' '.join(args)}` with only `serve --help` flags", problems)
    config_dir = os.path.dirname(config_value(values) or "routes.toml")
    binds = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":") if isinstance(volume, str) else [volume.get("source"), volume.get("target")]
        binds[parts[1].rstrip("/")] = parts[0]
    source = binds.get(config_dir)
    check(source and os.path.normpath(os.path.join(DEPLOY, source)) == os.path.join(DEPLOY, "compose"),
          f"{compose_path}: deploy/compose/ is mounted as the directory {config_dir} (hot reload sees edits)",
          [f"volumes: {service.get('volumes')}"])
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    referenced = env_refs(routes)
    missing = sorted(referenced - set(env))
    check(referenced and not missing,
          f"{compose_path}: whipgate gets every env var compose/routes.toml names ({', '.join(sorted(referenced))})",
          [f"missing: {', '.join(missing)}"])
    ports = [str(p) for p in service.get("ports", [])]
    check(any(p.endswith(f":{port}") for p in ports), f"{compose_path}: publishes whipgate's listen port {port}")
    grace = seconds(routes.get("server", {}).get("shutdown_grace", "10s"))
    stop = seconds(service.get("stop_grace_period", "10s"))
    check(stop is not None and grace is not None and stop > grace,
          f"{compose_path}: stop_grace_period {stop:g}s > shutdown_grace {grace:g}s")
    problems = []
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not os.path.exists(os.path.normpath(os.path.join(DEPLOY, source))):
                problems.append(f"{name}: {source} does not exist")
        build_ctx = svc.get("build")
        if isinstance(build_ctx, str) and not os.path.isfile(os.path.join(DEPLOY, build_ctx, "Dockerfile")):
            problems.append(f"{name}: no Dockerfile in {build_ctx}")
    check(not problems, f"{compose_path}: every bind-mounted path and build context exists", problems)

    # Prometheus scrapes whipgate and loads the rules; Grafana provisioning reaches the dashboard.
    prometheus = (parsed.get("deploy/prometheus/prometheus.yml") or [{}])[0]
    jobs = {j.get("job_name"): j for j in prometheus.get("scrape_configs", [])}
    job = jobs.get("whipgate", {})
    targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    check(targets == [f"whipgate:{port}"] and job.get("metrics_path", "/metrics") == "/metrics",
          f"prometheus.yml: job whipgate scrapes whipgate:{port}/metrics", [f"targets {targets}"])
    rule_files = prometheus.get("rule_files", [])
    check(rule_files and all(os.path.exists(os.path.join(DEPLOY, "prometheus", f)) for f in rule_files)
          and "alerts.yml" in [os.path.basename(f) for f in rule_files],
          f"prometheus.yml: rule_files {rule_files} load alerts.yml (mounted next to it)")
    provider = (parsed.get("deploy/grafana/provisioning/dashboards/whipgate.yml") or [{}])[0]
    paths = [p.get("options", {}).get("path", "").rstrip("/") for p in provider.get("providers", [])]
    mounts = [v.split(":")[1] for v in services.get("grafana", {}).get("volumes", []) if isinstance(v, str)]
    check(any(os.path.dirname(m) in paths and m.endswith("whipgate-dashboard.json") for m in mounts),
          f"{compose_path}: Grafana mounts the dashboard where the provider reads ({', '.join(paths)})")


def check_systemd(check_flags, serve_flags):
    path = os.path.join(DEPLOY, "whipgate.service")
    lines = {}
    with open(path) as handle:
        for line in handle:
            key, eq, value = line.strip().partition("=")
            if eq and not line.lstrip().startswith("#"):
                lines.setdefault(key, []).append(value)
    for key, sub, flags, positionals in (("ExecStart", "serve", serve_flags, 0),
                                         ("ExecStartPre", "check", check_flags, 1)):
        for value in lines.get(key, []):
            argv = shlex.split(value.lstrip("-@:+!"))
            problems, _ = check_args(argv[2:], flags, positionals) if flags is not None else (["no flags"], {})
            good = len(argv) > 1 and os.path.basename(argv[0]) == "whipgate" and argv[1] == sub and not problems
            check(good, f"deploy/whipgate.service: {key} `{value}` uses only `{sub} --help` flags", problems)


def check_promtool(promtool, parsed):
    if not promtool:
        not_ok("promtool is available (check.sh fetches it from Debian's prometheus package)")
        return
    alerts = os.path.join(DEPLOY, "prometheus", "alerts.yml")
    result = run([promtool, "check", "rules", alerts])
    check(result.returncode == 0, "promtool check rules deploy/prometheus/alerts.yml",
          (result.stdout + result.stderr).splitlines())
    config = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
    result = run([promtool, "check", "config", config])
    check(result.returncode == 0, "promtool check config deploy/prometheus/prometheus.yml (rules included)",
          (result.stdout + result.stderr).splitlines())
    tests = os.path.join(ROOT, "tests", "deploy", "alerts.test.yml")
    if os.path.exists(tests):
        result = run([promtool, "test", "rules", tests])
        check(result.returncode == 0, "promtool test rules tests/deploy/alerts.test.yml (each alert fires, and not on healthy data)",
              (result.stdout + result.stderr).splitlines()[-40:])
    dashboard = parsed.get("deploy/grafana/whipgate-dashboard.json")
    if dashboard is not None:
        queries = dashboard_queries(dashboard)
        rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(queries)]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dashboard-rules.yml")
            with open(path, "w") as handle:
                yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, handle)
            result = run([promtool, "check", "rules", path])
        details = (result.stdout + result.stderr).splitlines()
        for i, (where, expr) in enumerate(queries):
            if any(f"query_{i}" in line for line in details) or f'"{i}' in result.stderr:
                details.append(f"query_{i}: {where}: {expr}")
        check(result.returncode == 0, f"promtool parses the dashboard's {len(queries)} PromQL queries", details)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    bin_path = os.path.abspath(sys.argv[1])
    promtool = sys.argv[2] if len(sys.argv) == 3 else None
    version = run([bin_path, "--version"])
    note(f"whipgate: {bin_path} ({(version.stdout or version.stderr).strip() or 'no --version'})")
    note(f"promtool: {promtool or 'none'}")
    serve_flags = help_flags(bin_path, "serve")
    check_flags = help_flags(bin_path, "check")
    check(serve_flags is not None and "--config" in serve_flags,
          f"`whipgate serve --help` lists flags ({', '.join(sorted(f for f in (serve_flags or {}) if f.startswith('--')))})")

    parsed = check_parsing()
    objects = k8s_objects(parsed)
    check_kustomization(parsed, objects)
    check_k8s(bin_path, objects, serve_flags)
    compose_port = listen_port(parsed.get("deploy/compose/routes.toml") or {})
    image_cmd = check_dockerfile(serve_flags, compose_port)
    check_compose(bin_path, parsed, serve_flags, image_cmd)
    check_systemd(check_flags, serve_flags)
    check_metrics(bin_path, parsed)
    check_alert_rules(parsed)
    check_dashboard(parsed)
    check_promtool(promtool, parsed)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
