#!/usr/bin/env python3
"""Checks the invariants of what deploy/ ships that no tool checks for us.

Kubernetes (deploy/k8s/*.yaml): every document parses and sits in the
iommu-broker namespace; `privileged: true` appears only on the agent and only
under a comment that explains it; the agent adds exactly CAP_IPC_LOCK and
mounts exactly /dev/vfio and the launcher socket directory from the host; the
agent's pod has an unprivileged iommu-fdholder container without a liveness
probe whose socket directory the agent shares; the broker meets the `restricted` Pod Security profile; Secrets are mounted as
whole directories (so rotation reaches the files); Services, ServiceMonitors
and their selectors and ports line up; every --flag passed to a daemon is
one it defines. deploy/k8s/ha (broker replicas on etcd) passes the same
checks, and runs at least 3 replicas spread over nodes under a disruption
budget, with no store volume.

Grafana (deploy/grafana/iommu-broker.json) and alerts (deploy/prometheus/
alerts.yml): every metric queried is in docs/METRICS.md, the dashboard covers
every metric there, and every panel query is valid PromQL (promtool).

Run by `bazel test //tests/deploy:manifests_test`; prints every failure, not
just the first.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # Fail, never skip: scripts/setup.sh installs python3-yaml.
    sys.exit("FAIL: python3 yaml module missing (apt-get install python3-yaml)")

NAMESPACE = "iommu-broker"
FAILURES = []


def fail(msg):
    FAILURES.append(msg)


def daemon_flags(binary):
    """The flags a daemon defines, as its --help lists them (dashed)."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^  --([a-z0-9-]+)$", out, re.M))


# --------------------------------------------------------------- Kubernetes

def load_k8s(directory):
    docs = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".yaml"):
            continue
        path = os.path.join(directory, name)
        with open(path) as f:
            text = f.read()
        try:
            docs[name] = ([d for d in yaml.safe_load_all(text) if d is not None], text)
        except yaml.YAMLError as e:
            fail(f"{name}: not YAML: {e}")
    return docs


def check_privileged_comments(name, text):
    """Every `privileged: true` sits right under a comment that says why."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*privileged:\s*true\b", line):
            j = i - 1
            comment = []
            while j >= 0 and lines[j].strip().startswith("#"):
                comment.append(lines[j])
                j -= 1
            if not any("privileged" in c for c in comment):
                fail(f"{name}:{i + 1}: `privileged: true` without a comment above it saying why")


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def check_common_pod(where, doc, flags_of):
    spec = pod_spec(doc)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            fail(f"{where}: {key}: true")
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken must be false (no Kubernetes API access)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        cw = f"{where} container {c['name']}"
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            fail(f"{cw}: image {image!r} needs a version tag, not latest")
        sc = c.get("securityContext", {})
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{cw}: securityContext.capabilities.drop must be [ALL]")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{cw}: readOnlyRootFilesystem must be true")
        if "requests" not in c.get("resources", {}):
            fail(f"{cw}: resources.requests missing")
        if c.get("command", [""])[0].endswith("/iommu-fdholder"):
            # A liveness restart of the holder closes every fd it keeps for
            # the agent: it must never have one.
            if "livenessProbe" in c:
                fail(f"{cw}: the fd holder must have no livenessProbe (a restart closes every "
                     "fd it holds)")
            if "readinessProbe" not in c:
                fail(f"{cw}: readinessProbe missing")
        else:
            # The daemons answer /readyz and /healthz on their metrics port;
            # a TCP connect would call a wedged daemon healthy.
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {})
                if got.get("path") != path or got.get("port") != "metrics":
                    fail(f"{cw}: {probe} must be httpGet {path} on port metrics, got "
                         f"{c.get(probe)}")
        for m in c.get("volumeMounts", []):
            vol = volumes.get(m["name"])
            if vol is None:
                fail(f"{cw}: volumeMount {m['name']} has no volume")
            elif "secret" in vol and "subPath" in m:
                fail(f"{cw}: Secret volume {m['name']} mounted with subPath: updates (rotation) "
                     "would never reach the file")
        binary = os.path.basename(c.get("command", [""])[0])
        known = flags_of.get(binary)
        if known is None:
            fail(f"{cw}: command {c.get('command')} is not one of {sorted(flags_of)}")
            continue
        for arg in c.get("args", []):
            m = re.match(r"^--([a-z0-9_-]+)(=|$)", arg)
            if not m:
                fail(f"{cw}: argument {arg!r} is not --flag=value")
            elif "_" in m.group(1):
                fail(f"{cw}: argument --{m.group(1)} is spelled with '_' (deprecated; use '-')")
            elif m.group(1) not in known:
                fail(f"{cw}: {binary} defines no flag --{m.group(1)}")


def load_kustomization(directory):
    """An overlay: the kustomization's resources, by their path as listed."""
    own = load_k8s(directory)
    kust = own.get("kustomization.yaml", ([{}], ""))[0][0]
    docs = {"kustomization.yaml": own.get("kustomization.yaml", ([{}], ""))}
    listed = kust.get("resources", [])
    for name in sorted(n for n in own if n != "kustomization.yaml"):
        if name not in listed:
            fail(f"{directory}/kustomization.yaml: does not list {name}")
    for res in listed:
        path = os.path.normpath(os.path.join(directory, res))
        if not os.path.isfile(path):
            fail(f"{directory}/kustomization.yaml: resource {res} does not exist")
            continue
        with open(path) as f:
            text = f.read()
        docs[res] = ([d for d in yaml.safe_load_all(text) if d is not None], text)
    return docs


def check_k8s(directory, flags_of, ha=False):
    docs = load_kustomization(directory) if ha else load_k8s(directory)
    by_kind = {}
    for name, (ds, text) in docs.items():
        if name == "kustomization.yaml":
            continue
        check_privileged_comments(name, text)
        for d in ds:
            where = f"{name}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            for key in ("apiVersion", "kind", "metadata"):
                if key not in d:
                    fail(f"{where}: no {key}")
            if d.get("kind") != "Namespace" and d["metadata"].get("namespace") != NAMESPACE:
                fail(f"{where}: metadata.namespace must be {NAMESPACE}")
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = (name, d)

    # kustomization: everything but the CRD-dependent monitoring.yaml.
    if not ha:
        kust = docs.get("kustomization.yaml", ([{}], ""))[0][0]
        want = sorted(n for n in docs if n not in ("kustomization.yaml", "monitoring.yaml"))
        if sorted(kust.get("resources", [])) != want:
            fail(f"kustomization.yaml: resources {kust.get('resources')} != {want}")

    ns = by_kind.get("Namespace", {}).get(NAMESPACE)
    if ns is None:
        fail(f"no Namespace {NAMESPACE}")

    # Only the agent may be privileged.
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("DaemonSet", {})}
    for wname, (fname, d) in workloads.items():
        where = f"{fname}: {d['kind']}/{wname}"
        check_common_pod(where, d, flags_of)
        for c in pod_spec(d)["containers"]:
            if c.get("securityContext", {}).get("privileged") and wname != "iommu-agent":
                fail(f"{where}: only the agent may be privileged")

    # The broker: restricted profile; on SQLite one replica, Recreate, its
    # store on a PVC; on etcd several replicas spread over nodes.
    broker = by_kind.get("Deployment", {}).get("iommu-broker")
    if broker is None:
        fail(f"{directory}: no Deployment iommu-broker")
    else:
        fname, d = broker
        where = f"{directory}/{fname}: Deployment/iommu-broker"
        spec = pod_spec(d)
        if ha:
            check_ha_broker(where, d, by_kind)
        else:
            if d["spec"].get("replicas") != 1:
                fail(f"{where}: replicas must be 1 (one broker per SQLite store)")
            if d["spec"].get("strategy", {}).get("type") != "Recreate":
                fail(f"{where}: strategy must be Recreate (the old broker holds the store's lock)")
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            fail(f"{where}: runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{where}: seccompProfile must be RuntimeDefault")
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                fail(f"{where}: the broker mounts nothing from the host ({v['name']})")
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if claim not in by_kind.get("PersistentVolumeClaim", {}):
                    fail(f"{where}: PVC {claim} is not defined")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                fail(f"{where}: the broker is never privileged")
            if sc.get("capabilities", {}).get("add"):
                fail(f"{where}: the broker adds no capability")
            if not ha and "--db=/var/lib/iommu-broker/broker.db" not in c.get("args", []):
                fail(f"{where}: --db is not on the store volume")

    # The agent: IPC_LOCK only, exactly its host paths, OnDelete.
    agent = by_kind.get("DaemonSet", {}).get("iommu-agent")
    if agent is None:
        fail("no DaemonSet iommu-agent")
    else:
        fname, d = agent
        where = f"{fname}: DaemonSet/iommu-agent"
        spec = pod_spec(d)
        if d["spec"].get("updateStrategy", {}).get("type") != "OnDelete":
            fail(f"{where}: updateStrategy must be OnDelete (a restart unmaps every VM's DMA)")
        host_paths = sorted(v["hostPath"]["path"] for v in spec.get("volumes", [])
                            if "hostPath" in v)
        # The journal lives on the host so that it outlives the pod.
        if host_paths != ["/dev/vfio", "/run/iommu-agent", "/var/lib/iommu-agent"]:
            fail(f"{where}: host paths {host_paths}, want exactly /dev/vfio, /run/iommu-agent "
                 "and /var/lib/iommu-agent")
        by_binary = {os.path.basename(c.get("command", [""])[0]): c for c in spec["containers"]}
        for c in spec["containers"]:
            if os.path.basename(c.get("command", [""])[0]) == "iommu-fdholder":
                continue  # Checked below.
            caps = c.get("securityContext", {}).get("capabilities", {})
            if caps.get("add") != ["IPC_LOCK"]:
                fail(f"{where}: capabilities.add must be exactly [IPC_LOCK], got {caps.get('add')}")
            if "memory" in c.get("resources", {}).get("limits", {}):
                fail(f"{where}: no memory limit (pins fault guest pages into the agent's cgroup)")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            sockets = [a.split("=", 1)[1] for a in c.get("args", [])
                       if a.startswith("--launcher-socket=")]
            if not sockets or os.path.dirname(sockets[0]) not in mounts:
                fail(f"{where}: --launcher-socket must lie in a mounted host directory")
        # The fd holder: a separate container (the kubelet restarts the agent
        # without it), unprivileged, its socket in a directory the agent
        # mounts too.
        holder = by_binary.get("iommu-fdholder")
        if holder is None:
            fail(f"{where}: no iommu-fdholder container (the agent's fds would die with it)")
        else:
            sc = holder.get("securityContext", {})
            if sc.get("privileged") or sc.get("capabilities", {}).get("add"):
                fail(f"{where}: the fd holder needs no privilege and no capability")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{where}: the fd holder: allowPrivilegeEscalation must be false")
            holder_sockets = [a.split("=", 1)[1] for a in holder.get("args", [])
                              if a.startswith("--socket=")]
            holder_mounts = {m["mountPath"]: m["name"] for m in holder.get("volumeMounts", [])}
            agent_c = by_binary.get("iommu-agent", {})
            agent_mounts = {m["mountPath"]: m["name"] for m in agent_c.get("volumeMounts", [])}
            if len(holder_sockets) != 1:
                fail(f"{where}: the fd holder needs exactly one --socket=")
            else:
                d = os.path.dirname(holder_sockets[0])
                if d not in holder_mounts or holder_mounts.get(d) != agent_mounts.get(d):
                    fail(f"{where}: the fd holder's socket directory {d} must be a volume "
                         "the agent mounts at the same path")

    # Services select pods and name their ports; ServiceMonitors select Services.
    pod_labels = {w: d["spec"]["template"]["metadata"]["labels"]
                  for w, (_, d) in workloads.items()}
    pod_ports = {w: {p["name"] for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
                 for w, (_, d) in workloads.items()}
    for sname, (fname, s) in by_kind.get("Service", {}).items():
        sel = s["spec"].get("selector", {})
        hits = [w for w, labels in pod_labels.items()
                if all(labels.get(k) == v for k, v in sel.items())]
        if not hits:
            fail(f"{fname}: Service/{sname} selects no workload's pods")
        for p in s["spec"].get("ports", []):
            if isinstance(p.get("targetPort"), str) and not any(
                    p["targetPort"] in pod_ports[w] for w in hits):
                fail(f"{fname}: Service/{sname} port {p['name']}: no container port "
                     f"named {p['targetPort']}")
    for mname, (fname, m) in by_kind.get("ServiceMonitor", {}).items():
        sel = m["spec"]["selector"].get("matchLabels", {})
        services = [s for s, (_, sd) in by_kind.get("Service", {}).items()
                    if all(sd["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not services:
            fail(f"{fname}: ServiceMonitor/{mname} selects no Service")
            continue
        # The Service's name becomes the job label the alerts and dashboard use.
        if services != [mname]:
            fail(f"{fname}: ServiceMonitor/{mname} selects {services}, want exactly [{mname}]")
        port_names = {p["name"] for s in services
                      for p in by_kind["Service"][s][1]["spec"]["ports"]}
        for e in m["spec"]["endpoints"]:
            if e.get("port") not in port_names:
                fail(f"{fname}: ServiceMonitor/{mname} port {e.get('port')} not in {port_names}")
        if mname == "iommu-agent" and not any(
                r.get("targetLabel") == "node" for e in m["spec"]["endpoints"]
                for r in e.get("relabelings", [])):
            fail(f"{fname}: ServiceMonitor/iommu-agent must set the `node` label")

    for cname, (fname, d) in workloads.items():
        for c in pod_spec(d)["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    cm = by_kind.get("ConfigMap", {}).get(ref["name"])
                    if cm is None or ref["key"] not in cm[1].get("data", {}):
                        fail(f"{fname}: {cname}: ConfigMap {ref['name']} key {ref['key']} "
                             "is not defined")


def check_ha_broker(where, d, by_kind):
    """Replicas on etcd: at least 3, spread over nodes, no store volume, a
    disruption budget, one replica replaced at a time, each named after its
    pod."""
    spec = pod_spec(d)
    if (d["spec"].get("replicas") or 0) < 3:
        fail(f"{where}: replicas must be at least 3 (a failover needs a standby)")
    strategy = d["spec"].get("strategy", {})
    if strategy.get("type") != "RollingUpdate" or \
            strategy.get("rollingUpdate", {}).get("maxUnavailable") != 1:
        fail(f"{where}: strategy must be RollingUpdate with maxUnavailable 1")
    spread = [t for t in spec.get("topologySpreadConstraints", [])
              if t.get("topologyKey") == "kubernetes.io/hostname"
              and t.get("whenUnsatisfiable") == "DoNotSchedule"]
    if not spread:
        fail(f"{where}: replicas must be spread over nodes (topologySpreadConstraints on "
             "kubernetes.io/hostname, DoNotSchedule)")
    for v in spec.get("volumes", []):
        if "persistentVolumeClaim" in v:
            fail(f"{where}: replicas on etcd keep no state on a volume ({v['name']})")
    for c in spec["containers"]:
        args = c.get("args", [])
        if not any(a.startswith("--store=etcd://") for a in args):
            fail(f"{where}: --store=etcd://... missing")
        if "--replica-name=$(POD_NAME)" not in args:
            fail(f"{where}: --replica-name=$(POD_NAME) missing")
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
        if ref.get("fieldPath") != "metadata.name":
            fail(f"{where}: env POD_NAME must come from metadata.name")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        for flag in ("--etcd-cert=", "--etcd-key=", "--etcd-ca="):
            files = [a.split("=", 1)[1] for a in args if a.startswith(flag)]
            if not files or os.path.dirname(files[0]) not in mounts:
                fail(f"{where}: {flag}... must name a file in a mounted Secret")
    labels = d["spec"]["template"]["metadata"]["labels"]
    budgets = [b for _, b in by_kind.get("PodDisruptionBudget", {}).values()
               if all(labels.get(k) == v for k, v in
                      b["spec"].get("selector", {}).get("matchLabels", {}).items())]
    if not budgets or budgets[0]["spec"].get("maxUnavailable") != 1:
        fail(f"{where}: a PodDisruptionBudget with maxUnavailable 1 must select its pods")


# ----------------------------------------------------------- metrics users

def documented_metrics(metrics_md):
    """name -> type from docs/METRICS.md's tables."""
    with open(metrics_md) as f:
        rows = re.findall(r"^\| `(iommu_[a-z_]+)` \| ([a-z]+)", f.read(), re.M)
    if not rows:
        fail(f"{metrics_md}: no metrics found")
    return dict(rows)


def metric_names(expr):
    return set(re.findall(r"\b(iommu_(?:broker|agent)_[a-z_]+)\b", expr))


def base_name(name, documented):
    """Histogram series (_bucket, _count, _sum) -> the documented family."""
    if name in documented:
        return name
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and documented.get(name[:-len(suffix)]) == "histogram":
            return name[:-len(suffix)]
    return None


def check_names(where, expr, documented, used):
    for name in metric_names(expr):
        base = base_name(name, documented)
        if base is None:
            fail(f"{where}: {name} is not in docs/METRICS.md")
        else:
            used.add(base)


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):  # collapsed rows keep theirs inside
            yield q


def check_dashboard(path, documented):
    with open(path) as f:
        try:
            dash = json.load(f)
        except json.JSONDecodeError as e:
            fail(f"{path}: not JSON: {e}")
            return
    if dash.get("schemaVersion", 0) < 36:
        fail(f"{path}: schemaVersion {dash.get('schemaVersion')} < 36")
    for key in ("uid", "title"):
        if not dash.get(key):
            fail(f"{path}: no {key}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"{path}: needs a `datasource` variable of type datasource, query prometheus")
    ids, used, exprs, boxes = set(), set(), [], []
    for p in panels_of(dash):
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            fail(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in ("x", "y", "w", "h")) or g.get("x", 0) + g.get("w", 0) > 24:
            fail(f"{where}: bad gridPos {g}")
        else:
            for other, og in boxes:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    fail(f"{where}: overlaps panel {other}")
            boxes.append((p.get("id"), g))
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"{where}: datasource must be the ${{datasource}} variable")
        if not p.get("description"):
            fail(f"{where}: no description")
        if not p.get("targets"):
            fail(f"{where}: no queries")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"{where} query {t.get('refId')}: datasource must be ${{datasource}}")
            expr = t.get("expr", "")
            check_names(f"{where} query {t.get('refId')}", expr, documented, used)
            exprs.append((f"panel_{p.get('id')}_{t.get('refId')}", expr))
    for v in variables.values():
        q = v.get("definition", "")
        check_names(f"{path}: variable {v['name']}", q, documented, used)
    missing = sorted(set(documented) - used)
    if missing:
        fail(f"{path}: no panel shows {missing} (every metric in docs/METRICS.md has one)")
    return exprs


def check_promql(exprs):
    """Each panel query, with Grafana's variables filled in, is valid PromQL."""
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$tenant": ".*", "$node": ".*"}
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for name, expr in exprs:
        for k, v in subst.items():
            expr = expr.replace(k, v)
        if "$" in expr:
            fail(f"dashboard {name}: unknown variable in {expr!r}")
        rules["groups"][0]["rules"].append({"record": f"dashboard:{name}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False,
                                     dir=os.environ.get("TEST_TMPDIR")) as f:
        yaml.safe_dump(rules, f)
    r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if r.returncode != 0:
        fail("dashboard queries are not valid PromQL:\n" + r.stdout + r.stderr)


def check_alert_names(path, documented):
    with open(path) as f:
        rules = yaml.safe_load(f)
    used = set()
    for g in rules["groups"]:
        for r in g["rules"]:
            check_names(f"{path}: {r.get('alert') or r.get('record')}", r["expr"], documented, used)
            for key in ("summary", "description"):
                if not r.get("annotations", {}).get(key):
                    fail(f"{path}: {r.get('alert')}: no {key} annotation")


def main():
    os.chdir(os.path.join(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "")))
    metrics_md = sys.argv[1] if len(sys.argv) > 1 else "docs/METRICS.md"
    flags_of = {"iommu-broker": daemon_flags("server/iommu-broker"),
                "iommu-agent": daemon_flags("agent/iommu-agent"),
                "iommu-fdholder": daemon_flags("agent/iommu-fdholder")}
    for binary, flags in flags_of.items():
        if not flags:
            fail(f"{binary} --help listed no flags")
    check_k8s("deploy/k8s", flags_of)
    check_k8s("deploy/k8s/ha", flags_of, ha=True)
    documented = documented_metrics(metrics_md)
    exprs = check_dashboard("deploy/grafana/iommu-broker.json", documented)
    if exprs:
        check_promql(exprs)
    check_alert_names("deploy/prometheus/alerts.yml", documented)
    if FAILURES:
        for f in FAILURES:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(f"{len(FAILURES)} failure(s)")
    print("PASS: deploy/k8s, deploy/k8s/ha, deploy/grafana and the alerts' metric names")


if __name__ == "__main__":
    main()
