#!/usr/bin/env python3
"""Consistency of the operations assets with the metrics contract and the runbook.

    python3 .ci/check-ops-assets.py              # from anywhere in the repository
    python3 .ci/check-ops-assets.py --promtool   # also parse every dashboard query with promtool

Checks, stdlib only:
- deploy/grafana/mcp-edge.json is valid JSON, schemaVersion >= 38, has a `datasource` variable
  (type datasource, plugin prometheus) and `instance` and `route` query variables, unique panel
  ids, and every panel and query on the `${datasource}` variable;
- every metric name in a dashboard query (panels, annotations, variables) and in an alert or
  recording rule expression of deploy/prometheus/alerts.yml is a family documented in
  docs/metrics.md (histogram series may add `_bucket`, `_sum`, `_count`), or `up`;
- every alert has an `expr`, a `severity` label (info, warning, critical), `summary`,
  `description` and `runbook_url` annotations, and each runbook_url ends in
  `runbooks/alerts.md#<anchor>` with <anchor> a heading of runbooks/alerts.md (GitHub anchor
  rules); every `McpEdge…` heading there is an alert in alerts.yml;
- every relative link in runbooks/alerts.md points at an existing file, and at an existing
  heading when it has a `#fragment` into a Markdown file.

With --promtool, every dashboard query (Grafana variables replaced by plain values) is written
to a temporary rule file and parsed by `promtool check rules`. Exit 0 when all hold; otherwise
every offender is printed, naming the file and the panel, rule or line, and the exit is 1.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
METRICS_DOC = "docs/metrics.md"
DASHBOARD = "deploy/grafana/mcp-edge.json"
ALERTS = "deploy/prometheus/alerts.yml"
RUNBOOK = "runbooks/alerts.md"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ALWAYS_KNOWN = {"up"}
SEVERITIES = {"info", "warning", "critical"}
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")

# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan", "start", "end",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}

errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


# --- docs/metrics.md ------------------------------------------------------------------------

def documented_families():
    """{name: type} from the tables under "## Families" ('' when the row gives no type)."""
    families = {}
    in_families = False
    for line in read(METRICS_DOC).splitlines():
        if line.startswith("## "):
            in_families = line.strip() == "## Families"
            continue
        if not in_families or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        names = re.findall(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", cells[0])
        for name in names:
            families[name] = cells[1].lower()
    if not families:
        fail(METRICS_DOC, 'no metric families found under "## Families"')
    return families


# --- PromQL ---------------------------------------------------------------------------------

def metric_names(expr):
    """Metric names an expression selects (a lexical scan, enough for these files)."""
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "VAR", expr)  # Grafana variables
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', s)  # strings
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = []
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # part of a number (1e3, 0x1f)
        word = m.group(0)
        if word == "VAR" or word.lower() in PROMQL_WORDS:
            continue
        if s[m.end():].lstrip().startswith("("):
            continue  # a function call
        names.append(word)
    return names


def check_names(where, expr, families, defined=()):
    for name in metric_names(expr):
        if name in families or name in ALWAYS_KNOWN or name in defined:
            continue
        base = next((name[: -len(x)] for x in HISTOGRAM_SUFFIXES if name.endswith(x)), None)
        if base and families.get(base) == "histogram":
            continue
        hint = ""
        if base and base in families:
            hint = f" ({base} is a {families[base] or 'family'} without {name[len(base):]})"
        fail(where, f"metric `{name}` is not documented in {METRICS_DOC}{hint}: {one_line(expr)}")


def one_line(expr):
    text = " ".join(expr.split())
    return text if len(text) <= 160 else text[:157] + "..."


# --- Markdown anchors -----------------------------------------------------------------------

def github_anchor(heading):
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = "".join(
        c for c in text
        if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"
    )
    return kept.replace(" ", "-")


def headings(rel):
    """[(line number, heading text, anchor)] of a Markdown file, outside fenced code."""
    out = []
    seen = {}
    fence = None
    lines = read(rel).splitlines()
    for n, line in enumerate(lines, 1):
        m = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark[0] * len(mark)
            elif mark.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        text = m.group(1) if m else None
        if text is None and n < len(lines) and line.strip() and not line.lstrip().startswith(("|", "-", "*", ">")):
            if re.match(r"^\s{0,3}(=+|-+)\s*$", lines[n]):
                text = line.strip()
        if text is None:
            continue
        anchor = github_anchor(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        out.append((n, text, anchor))
    return out


def check_runbook_links(rel):
    base = os.path.dirname(rel)
    fence = None
    for n, line in enumerate(read(rel).splitlines(), 1):
        m = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if m:
            fence = None if fence else m.group(1)[0]
            continue
        if fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            path, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(base, path)) if path else rel
            if not os.path.exists(os.path.join(ROOT, dest)):
                fail(f"{rel}:{n}", f"link to missing file {target}")
                continue
            if frag and dest.endswith(".md"):
                if frag not in {a for _, _, a in headings(dest)}:
                    fail(f"{rel}:{n}", f"link {target}: no heading with anchor #{frag} in {dest}")


# --- alerts.yml (the subset of YAML a rule file uses) ----------------------------------------

def unquote(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return json.loads(v)
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    return v


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def flow_map(v, where):
    inner = v.strip()[1:-1].strip()
    out = {}
    if not inner:
        return out
    for part in re.findall(r'(?:[^,"\']|"(?:[^"\\]|\\.)*"|\'[^\']*\')+', inner):
        if ":" not in part:
            fail(where, f"cannot read flow mapping {v}")
            continue
        k, _, val = part.partition(":")
        out[k.strip()] = unquote(val)
    return out


def parse_rules(rel):
    """[{kind, name, line, expr, labels, annotations}] from a Prometheus rule file."""
    lines = read(rel).splitlines()
    rules = []
    cur = None
    rule_indent = None
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        n = i + 1
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"^(\s*)-\s+(alert|record):\s*(.*?)\s*$", line)
        if m:
            cur = {"kind": m.group(2), "name": unquote(m.group(3)), "line": n, "expr": None,
                   "labels": {}, "annotations": {}, "keys": set()}
            rules.append(cur)
            rule_indent = len(m.group(1)) + 2
            section = None
            continue
        if cur is None:
            continue
        ind = indent_of(line)
        if ind < rule_indent:
            cur = None  # left the rule (next group, or the end of rules)
            continue
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*?))?\s*$", line)
        if not m:
            fail(f"{rel}:{n}", f"cannot read this line of rule {cur['name']} (use one key per line, "
                                "and block scalars | or >- for long values)")
            continue
        key, value = m.group(1), m.group(2) or ""
        if re.match(r"^[|>][-+]?$", value):
            block = []
            while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) > ind):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            width = min((indent_of(b) for b in block if b.strip()), default=0)
            body = [b[width:] for b in block]
            value = "\n".join(body) if value[0] == "|" else " ".join(b.strip() for b in body if b.strip())
        elif value.startswith("{"):
            value = flow_map(value, f"{rel}:{n}")
        else:
            value = unquote(value)
        if ind == rule_indent:
            cur["keys"].add(key)
            if key in ("labels", "annotations"):
                section = key
                if isinstance(value, dict):
                    cur[key].update(value)
                elif value:
                    fail(f"{rel}:{n}", f"{key} of {cur['name']} must be a mapping")
            else:
                section = None
                if key == "expr":
                    cur["expr"] = value
        elif section:
            cur[section][key] = value
        else:
            fail(f"{rel}:{n}", f"unexpected nested key {key} in rule {cur['name']}")
    return rules


# --- Grafana dashboard ----------------------------------------------------------------------

def dashboard_queries(dash):
    """[(where, expr)] of every query in the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            title = p.get("title", "?")
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'panel {p.get("id")} "{title}" query {t.get("refId", "?")}', t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f'annotation "{a.get("name", "?")}"', a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.match(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", q, re.S)
        if m:
            q = m.group(1)
        elif re.match(r"^\s*label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", q):
            q = ""
        else:
            m = re.match(r"^\s*query_result\((.*)\)\s*$", q, re.S)
            if m:
                q = m.group(1)
        if q.strip():
            out.append((f'variable "{v.get("name")}"', q))
    return out


def uses_datasource_var(ds):
    if isinstance(ds, dict):
        ds = ds.get("uid")
    return ds in ("${datasource}", "$datasource")


def check_dashboard(families):
    try:
        dash = json.loads(read(DASHBOARD))
    except (OSError, ValueError) as e:
        fail(DASHBOARD, f"not valid JSON: {e}")
        return []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 38:
        fail(DASHBOARD, f"schemaVersion {dash.get('schemaVersion')!r}; need 38 or later")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(DASHBOARD, 'needs a variable "datasource" of type datasource with query "prometheus"')
    for name in ("instance", "route"):
        v = variables.get(name)
        q = v.get("query") if v else None
        q = q.get("query") if isinstance(q, dict) else q
        if not v or v.get("type") != "query" or not str(q or "").startswith("label_values("):
            fail(DASHBOARD, f'needs a query variable "{name}" from label_values(...)')
        elif not uses_datasource_var(v.get("datasource")):
            fail(DASHBOARD, f'variable "{name}" must query the ${{datasource}} variable')

    ids = {}

    def walk(panels):
        for p in panels:
            where = f'{DASHBOARD}: panel {p.get("id")} "{p.get("title", "?")}"'
            if p.get("id") in ids:
                errors.append(f"{where}: id also used by panel \"{ids[p.get('id')]}\"")
            ids[p.get("id")] = p.get("title", "?")
            if p.get("type") != "row":
                if not uses_datasource_var(p.get("datasource")):
                    errors.append(f"{where}: datasource is not ${{datasource}}")
                if not any(t.get("expr") for t in p.get("targets", [])):
                    errors.append(f"{where}: no query")
                for t in p.get("targets", []):
                    if not uses_datasource_var(t.get("datasource", p.get("datasource"))):
                        errors.append(f"{where}: query {t.get('refId')} datasource is not ${{datasource}}")
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    queries = dashboard_queries(dash)
    for where, expr in queries:
        check_names(f"{DASHBOARD}: {where}", expr, families)
    return queries


def grafana_to_promql(expr):
    """A dashboard query with Grafana's variables replaced, for promtool."""
    for var, value in (("__rate_interval", "5m"), ("__interval", "1m"), ("__range", "1h")):
        expr = expr.replace("${" + var + "}", value).replace("$" + var, value)
    return re.sub(r"\$\{[^}]*\}|\$\w+", ".*", expr)


def promtool_check(queries):
    promtool = shutil.which("promtool")
    if not promtool:
        fail("--promtool", "promtool not found on PATH (Debian: apt-get install prometheus)")
        return
    names = {}
    lines = ["groups:", "  - name: dashboard-queries", "    rules:"]
    for n, (where, expr) in enumerate(queries, 1):
        record = f"dashboard:query_{n}"
        names[record] = where
        lines.append(f"      - record: {record}")
        lines.append(f"        expr: {json.dumps(grafana_to_promql(expr))}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        res = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if res.returncode != 0:
        report = (res.stdout + res.stderr).strip()
        named = [f"{DASHBOARD}: {w} does not parse" for r, w in names.items()
                 if re.search(re.escape(r) + r"\b", report)]
        errors.extend(named or [f"{DASHBOARD}: promtool refused the dashboard queries"])
        errors.append("promtool said:\n" + report)


# --- main -----------------------------------------------------------------------------------

def main(argv):
    use_promtool = "--promtool" in argv[1:]
    unknown = [a for a in argv[1:] if a != "--promtool"]
    if unknown:
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2

    families = documented_families()
    queries = check_dashboard(families)

    rules = parse_rules(ALERTS)
    if not rules:
        fail(ALERTS, "no rules found")
    recorded = {r["name"] for r in rules if r["kind"] == "record"}
    anchors = {a for _, _, a in headings(RUNBOOK)}
    alert_names = set()
    for r in rules:
        where = f"{ALERTS}:{r['line']}: {r['kind']} {r['name']}"
        if not r["expr"]:
            fail(where, "no expr")
        else:
            check_names(where, r["expr"], families, recorded)
        if r["kind"] != "alert":
            continue
        alert_names.add(r["name"])
        sev = r["labels"].get("severity")
        if sev not in SEVERITIES:
            fail(where, f"severity label {sev!r}; expected one of {sorted(SEVERITIES)}")
        for a in REQUIRED_ANNOTATIONS:
            if not str(r["annotations"].get(a, "")).strip():
                fail(where, f"no {a} annotation")
        url = str(r["annotations"].get("runbook_url", ""))
        m = re.search(r"(?:^|/)runbooks/alerts\.md#([^#\s]+)$", url)
        if url and not m:
            fail(where, f"runbook_url {url!r} does not end in runbooks/alerts.md#<anchor>")
        elif m and m.group(1) not in anchors:
            fail(where, f"runbook_url anchor #{m.group(1)} is not a heading of {RUNBOOK}")

    for n, text, _ in headings(RUNBOOK):
        if re.fullmatch(r"McpEdge\w+", text.strip("` ")) and text.strip("` ") not in alert_names:
            fail(f"{RUNBOOK}:{n}", f"section {text} names no alert of {ALERTS}")
    check_runbook_links(RUNBOOK)

    if use_promtool and queries:
        promtool_check(queries)

    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"check-ops-assets: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"check-ops-assets: ok ({len(families)} documented families, {len(queries)} dashboard "
          f"queries, {len(rules)} rules, {len(alert_names)} alerts with runbook sections"
          f"{', dashboard queries parsed by promtool' if use_promtool else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
