#!/usr/bin/env python3
"""Check deploy/kubernetes without a cluster (kubeconform and a cluster's
dry run are not available offline): the schema rules a cluster would apply
to these kinds (apiVersion/kind pairs, names, selectors matching labels,
containers, volume mounts referring to volumes, env, ports, probes,
resources), and SAGE's own agreements between the files (the tenants'
labelled sockets where the injection mounts them, LD_PRELOAD where the
DaemonSet lays libsage out, probes on the broker's socket). Then it checks
itself: every mutation in MUTATIONS must be reported. Exit 77 without
PyYAML (Debian: python3-yaml).

    check_manifests.py DEPLOY_KUBERNETES_DIR
"""
import copy
import glob
import os
import re
import shlex
import sys

from deploy_check import missed_mutations, verdict

try:
    import yaml
except ImportError:
    print("SKIP: PyYAML missing (Debian: python3-yaml)")
    sys.exit(77)

KINDS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "ServiceAccount": "v1",
    "Pod": "v1",
    "DaemonSet": "apps/v1",
    "ClusterPolicy": "kyverno.io/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
NAMESPACED = {"ConfigMap", "ServiceAccount", "Pod", "DaemonSet"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SAGE_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,63}$")  # daemon/README.md, --label-socket
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
VOLUME_SOURCES = {"hostPath", "emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected", "downwardAPI"}
HOSTPATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"}
PROBE_HANDLERS = {"exec", "httpGet", "tcpSocket", "grpc"}
CAPABILITY = re.compile(r"^[A-Z_]+$")
SOCKET = "/run/sage/saged.sock"


def quantity(text):
    m = QUANTITY.match(str(text))
    return float(m.group(1)) * UNITS[m.group(3)] if m else None


class Checker:
    def __init__(self, docs):
        self.docs = docs  # [(file, doc)]
        self.problems = []

    def bad(self, where, what):
        self.problems.append(f"{where}: {what}")

    def of_kind(self, kind):
        return [(f, d) for f, d in self.docs if d.get("kind") == kind]

    def run(self):
        for f, d in self.docs:
            self.check_object(f, d)
        self.check_sage()
        return self.problems

    # ---------------------------------------------------------------- schema
    def check_object(self, f, d):
        kind, api = d.get("kind"), d.get("apiVersion")
        where = f"{f} {kind}/{(d.get('metadata') or {}).get('name')}"
        if kind not in KINDS:
            return self.bad(where, f"unknown kind {kind!r}")
        if api != KINDS[kind]:
            return self.bad(where, f"apiVersion {api!r}, {kind} is {KINDS[kind]!r}")
        if kind == "Kustomization":
            return self.check_kustomization(f, d)
        meta = d.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return self.bad(where, "metadata.name missing")
        name_re = DNS_LABEL if kind in ("Namespace", "Pod") else DNS_SUBDOMAIN
        if not name_re.match(meta["name"]):
            self.bad(where, f"name {meta['name']!r} is no DNS name")
        if kind in NAMESPACED and kind != "Pod" and not meta.get("namespace"):
            self.bad(where, "namespaced kind without metadata.namespace")
        self.check_labels(where, meta.get("labels") or {})
        if kind == "ConfigMap":
            for k, v in (d.get("data") or {}).items():
                if not isinstance(v, str):
                    self.bad(where, f"data.{k} is not a string")
        elif kind == "DaemonSet":
            self.check_daemonset(where, d.get("spec") or {})
        elif kind == "Pod":
            self.check_pod_spec(where, d.get("spec") or {}, True)
        elif kind == "ClusterPolicy":
            self.check_policy(where, d.get("spec") or {})

    def check_labels(self, where, labels):
        for k, v in labels.items():
            if not LABEL_KEY.match(str(k)) or not isinstance(v, str) or not LABEL_VALUE.match(v):
                self.bad(where, f"label {k}={v!r} invalid")

    def check_kustomization(self, f, d):
        listed = d.get("resources") or []
        for r in listed:
            if not os.path.exists(os.path.join(self.root, r)):
                self.bad(f, f"resource {r} does not exist")
        for path in glob.glob(os.path.join(self.root, "*.yaml")):
            name = os.path.basename(path)
            if name != "kustomization.yaml" and name not in listed:
                self.bad(f, f"{name} is not listed in resources")

    def check_daemonset(self, where, spec):
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        tmpl = spec.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if not sel:
            self.bad(where, "spec.selector.matchLabels empty")
        for k, v in sel.items():
            if labels.get(k) != v:
                self.bad(where, f"selector {k}={v} does not match the template's labels")
        self.check_labels(where, labels)
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy not in ("RollingUpdate", "OnDelete"):
            self.bad(where, f"updateStrategy {strategy}")
        self.check_pod_spec(where, tmpl.get("spec") or {}, True)

    def check_unique(self, where, what, name, pattern, seen):
        """A name of a list (volumes, env) that pattern allows and the list has not had yet (seen)."""
        if not isinstance(name, str) or not pattern.match(name):
            self.bad(where, f"{what} name {name!r}")
        if name in seen:
            self.bad(where, f"{what} {name} twice")

    def check_pod_spec(self, where, spec, complete):
        volumes = {}
        for v in spec.get("volumes") or []:
            name = v.get("name")
            self.check_unique(where, "volume", name, DNS_LABEL, volumes)
            volumes[name] = v
            sources = set(v) & VOLUME_SOURCES
            if len(sources) != 1 or set(v) - VOLUME_SOURCES - {"name"}:
                self.bad(where, f"volume {name}: not exactly one known source: {sorted(set(v) - {'name'})}")
            hp = v.get("hostPath")
            if hp is not None:
                if not str(hp.get("path", "")).startswith("/"):
                    self.bad(where, f"volume {name}: hostPath.path not absolute")
                if hp.get("type", "") not in HOSTPATH_TYPES:
                    self.bad(where, f"volume {name}: hostPath.type {hp.get('type')!r}")
        containers = spec.get("containers")
        if complete and (not isinstance(containers, list) or not containers):
            self.bad(where, "no containers")
        names = set()
        for c in (spec.get("initContainers") or []) + (containers or []):
            self.check_container(where, c, volumes, names, complete)

    def check_container(self, where, c, volumes, names, complete):
        name = c.get("name") if complete else c.get("(name)")
        w = f"{where} container {name}"
        if complete:
            if not isinstance(name, str) or not DNS_LABEL.match(name):
                self.bad(w, "name is no DNS label")
            if name in names:
                self.bad(w, "name used twice")
            names.add(name)
            if not isinstance(c.get("image"), str) or not c["image"]:
                self.bad(w, "no image")
        for key in ("command", "args"):
            if key in c and not (isinstance(c[key], list) and all(isinstance(x, str) for x in c[key])):
                self.bad(w, f"{key} is not a list of strings")
        env_names = set()
        for e in c.get("env") or []:
            n = e.get("name")
            self.check_unique(w, "env", n, ENV_NAME, env_names)
            env_names.add(n)
            values = [k for k in e if k in ("value", "valueFrom", "+(value)")]
            if len(values) != 1:
                self.bad(w, f"env {n}: needs exactly one of value, valueFrom")
            for k in values:
                if k != "valueFrom" and not isinstance(e[k], str):
                    self.bad(w, f"env {n}: value is not a string (quote it)")
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and not any(
                d["metadata"]["name"] == ref.get("name") and ref.get("key") in (d.get("data") or {})
                for _, d in self.of_kind("ConfigMap")
            ):
                self.bad(w, f"env {n}: ConfigMap {ref.get('name')} key {ref.get('key')} not defined here")
        paths = set()
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                self.bad(w, f"volumeMount {m.get('name')}: no such volume")
            p = m.get("mountPath", "")
            if not str(p).startswith("/"):
                self.bad(w, f"volumeMount {m.get('name')}: mountPath not absolute")
            if p in paths:
                self.bad(w, f"mountPath {p} twice")
            paths.add(p)
        ports = set()
        for p in c.get("ports") or []:
            n = p.get("containerPort")
            if not isinstance(n, int) or not 0 < n < 65536:
                self.bad(w, f"containerPort {n!r}")
            if p.get("name") is not None and (len(p["name"]) > 15 or not DNS_LABEL.match(p["name"])):
                self.bad(w, f"port name {p['name']!r}")
            if n in ports:
                self.bad(w, f"containerPort {n} twice")
            ports.add(n)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in c:
                continue
            pr = c[probe]
            if len(set(pr) & PROBE_HANDLERS) != 1:
                self.bad(w, f"{probe}: needs exactly one of {sorted(PROBE_HANDLERS)}")
            for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"):
                if k in pr and (not isinstance(pr[k], int) or pr[k] < (0 if k == "initialDelaySeconds" else 1)):
                    self.bad(w, f"{probe}.{k} = {pr[k]!r}")
            if probe in ("livenessProbe", "startupProbe") and pr.get("successThreshold", 1) != 1:
                self.bad(w, f"{probe}.successThreshold must be 1")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for k, v in (res.get(part) or {}).items():
                if quantity(v) is None:
                    self.bad(w, f"resources.{part}.{k} = {v!r}: no quantity")
        for k, v in (res.get("requests") or {}).items():
            lim = (res.get("limits") or {}).get(k)
            if lim is not None and quantity(v) is not None and quantity(lim) is not None and quantity(v) > quantity(lim):
                self.bad(w, f"resources: request {k} {v} above its limit {lim}")
        caps = ((c.get("securityContext") or {}).get("capabilities") or {})
        for k in ("add", "drop"):
            for cap in caps.get(k) or []:
                if not CAPABILITY.match(cap) or cap.startswith("CAP_"):
                    self.bad(w, f"capability {cap!r} (names without CAP_)")

    def check_policy(self, where, spec):
        for rule in spec.get("rules") or []:
            patch = ((rule.get("mutate") or {}).get("patchStrategicMerge") or {}).get("spec")
            if patch is None:
                self.bad(where, f"rule {rule.get('name')}: no mutate.patchStrategicMerge.spec")
                continue
            self.check_pod_spec(f"{where} rule {rule.get('name')}", patch, False)

    # ---------------------------------------------------------------- SAGE's agreements
    def check_sage(self):
        ds = [d for _, d in self.of_kind("DaemonSet") if d["metadata"]["name"] == "saged"]
        cms = [d for _, d in self.of_kind("ConfigMap") if d["metadata"]["name"] == "saged-config"]
        pols = [d for _, d in self.of_kind("ClusterPolicy")]
        if len(ds) != 1 or len(cms) != 1 or len(pols) != 1:
            return self.bad("sage", "expected one DaemonSet saged, one ConfigMap saged-config, one ClusterPolicy")
        ds, cm, pol = ds[0], cms[0], pols[0]
        pod = ds["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        saged = next((c for c in pod.get("containers") or [] if c.get("name") == "saged"), None)
        if saged is None:
            return self.bad("DaemonSet saged", "no container saged")
        if not pod.get("hostPID"):
            self.bad("DaemonSet saged", "hostPID off: suspend cannot see function processes")
        if "nvidia.com/gpu" in str(saged.get("resources")):
            self.bad("DaemonSet saged", "requests nvidia.com/gpu: the device plugin would take GPUs from functions")
        cmd = " ".join(saged.get("command") or [])
        if f"--socket {SOCKET}" not in cmd:
            self.bad("DaemonSet saged", f"saged does not listen on {SOCKET}")

        def host_path_of(container, path):
            """The node path `path` (inside `container`) is, or None."""
            for m in container.get("volumeMounts") or []:
                if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
                    hp = (vols.get(m["name"]) or {}).get("hostPath")
                    return hp["path"] + path[len(m["mountPath"]):] if hp else None
            return None

        if host_path_of(saged, SOCKET) != SOCKET:
            self.bad("DaemonSet saged", f"{SOCKET} is not the node's {SOCKET} (mount /run/sage at the same path)")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            argv = ((saged.get(probe) or {}).get("exec") or {}).get("command") or []
            if "sagectl" not in " ".join(argv[:1]) or "ping" not in argv or SOCKET not in argv:
                self.bad("DaemonSet saged", f"{probe} is not sagectl --socket {SOCKET} ping")
        # The tenants: /run/sage/tenants/LABEL/saged.sock=LABEL, LABEL a Kubernetes namespace.
        words = shlex.split(cm["data"].get("SAGED_OPTIONS", ""))
        tenants = []
        for i, w in enumerate(words):
            if w in ("--socket", "-s", "--foreground"):
                self.bad("ConfigMap saged-config", f"{w}: the DaemonSet sets it")
            if w == "--label-socket":
                spec = words[i + 1] if i + 1 < len(words) else ""
                path, _, rest = spec.partition("=")
                label = rest.split(",")[0]
                if not SAGE_LABEL.match(label) or not DNS_LABEL.match(label):
                    self.bad("ConfigMap saged-config", f"label {label!r}: not a Kubernetes namespace name")
                if path != f"/run/sage/tenants/{label}/saged.sock":
                    self.bad("ConfigMap saged-config", f"{path}: namespace {label}'s socket is /run/sage/tenants/{label}/saged.sock")
                if host_path_of(saged, path) != path:
                    self.bad("ConfigMap saged-config", f"{path} is not on the node's /run/sage")
                tenants.append(label)
        if not tenants:
            self.bad("ConfigMap saged-config", "no tenant (--label-socket)")
        # The preload layout: the init container writes where the policy mounts from.
        init = next((c for c in pod.get("initContainers") or [] if "sage-install-preload" in " ".join(c.get("command") or [])), None)
        layout = None
        if init is None:
            self.bad("DaemonSet saged", "no init container runs sage-install-preload")
        else:
            target = init["command"][-1]
            layout = host_path_of(init, target)
            if layout is None:
                self.bad("DaemonSet saged", f"sage-install-preload writes {target}, which is not on the node")
        for rule in pol["spec"].get("rules") or []:
            where = f"ClusterPolicy rule {rule.get('name')}"
            patch = rule["mutate"]["patchStrategicMerge"]["spec"]
            pvols = {v["name"]: v for v in patch.get("volumes") or []}
            for c in patch.get("containers") or []:
                env = {e["name"]: e.get("value", e.get("+(value)")) for e in c.get("env") or []}
                mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
                for path, m in mounts.items():
                    if not m.get("readOnly"):
                        self.bad(where, f"{path} mounted writable: a tenant could replace the socket or libsage")
                sock = env.get("SAGE_SOCKET", "")
                sock_mount = mounts.get(os.path.dirname(sock))
                hp = ((pvols.get((sock_mount or {}).get("name")) or {}).get("hostPath") or {}).get("path")
                if hp != "/run/sage/tenants/{{request.namespace}}":
                    self.bad(where, f"SAGE_SOCKET {sock!r} is not the pod namespace's /run/sage/tenants/NAMESPACE")
                elif os.path.basename(sock) != "saged.sock":
                    self.bad(where, f"SAGE_SOCKET {sock!r}: the tenant's socket is saged.sock")
                pre = env.get("LD_PRELOAD", "")
                m = re.match(r"^(/.*)/\$LIB/libsage\.so$", pre)
                if not m:
                    self.bad(where, f"LD_PRELOAD {pre!r} is not DIR/$LIB/libsage.so (musl images would fail to start)")
                    continue
                pm = mounts.get(m.group(1))
                hp = ((pvols.get((pm or {}).get("name")) or {}).get("hostPath") or {}).get("path")
                if layout is not None and hp != layout:
                    self.bad(where, f"LD_PRELOAD's {m.group(1)} is not the node's {layout} that the DaemonSet fills")
        for f, d in self.of_kind("Pod"):
            ns = d["metadata"].get("namespace")
            if ns not in tenants:
                self.bad(f, f"example pod in namespace {ns!r}, which has no labelled socket")
            for v in d["spec"].get("volumes") or []:
                hp = (v.get("hostPath") or {}).get("path", "")
                if hp.startswith("/run/sage/tenants/") and hp != f"/run/sage/tenants/{ns}":
                    self.bad(f, f"mounts {hp}, another namespace's socket folder")


def load(root):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        with open(path) as fh:
            for d in yaml.safe_load_all(fh):
                if d is not None:
                    docs.append((os.path.relpath(path, root), d))
    return docs


def find(docs, kind, name=None):
    return next(d for _, d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name))


def ds_pod(docs):
    return find(docs, "DaemonSet", "saged")["spec"]["template"]["spec"]


def saged_container(docs):
    return next(c for c in ds_pod(docs)["containers"] if c["name"] == "saged")


def policy_container(docs):
    return find(docs, "ClusterPolicy")["spec"]["rules"][0]["mutate"]["patchStrategicMerge"]["spec"]["containers"][0]


def set_env(container, name, value):
    for e in container["env"]:
        if e["name"] == name:
            e.pop("+(value)", None)
            e["value"] = value


# Each breaks one rule; the checker must say so.
MUTATIONS = {
    "wrong apiVersion": lambda d: find(d, "DaemonSet").update(apiVersion="extensions/v1beta1"),
    "selector does not match": lambda d: find(d, "DaemonSet")["spec"]["selector"]["matchLabels"].update(x="y"),
    "mount of a missing volume": lambda d: ds_pod(d)["volumes"].pop(0),
    "container name twice": lambda d: ds_pod(d)["containers"].append(copy.deepcopy(saged_container(d))),
    "probe without handler": lambda d: saged_container(d)["livenessProbe"].pop("exec"),
    "request above limit": lambda d: saged_container(d)["resources"]["requests"].update(memory="8Gi"),
    "bad port": lambda d: saged_container(d).update(ports=[{"containerPort": 70000}]),
    "unknown ConfigMap key": lambda d: find(d, "ConfigMap")["data"].pop("SAGED_OPTIONS"),
    "env value not a string": lambda d: saged_container(d)["env"].append({"name": "X", "value": 1}),
    "no hostPID": lambda d: ds_pod(d).pop("hostPID"),
    "GPU from the device plugin": lambda d: saged_container(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
    "socket folder not the node's": lambda d: saged_container(d)["volumeMounts"][0].update(mountPath="/var/run/sage"),
    "tenant socket elsewhere": lambda d: find(d, "ConfigMap")["data"].update(
        SAGED_OPTIONS="--label-socket /run/sage/tenants/team-a/saged.sock=team-b"),
    "LD_PRELOAD without $LIB": lambda d: set_env(policy_container(d), "LD_PRELOAD", "/opt/sage/preload/lib/libsage.so"),
    "preload from another folder": lambda d: find(d, "ClusterPolicy")["spec"]["rules"][0]["mutate"]["patchStrategicMerge"][
        "spec"]["volumes"][1]["hostPath"].update(path="/opt/other"),
    "writable socket mount": lambda d: policy_container(d)["volumeMounts"][0].update(readOnly=False),
    "socket of a fixed tenant": lambda d: find(d, "ClusterPolicy")["spec"]["rules"][0]["mutate"]["patchStrategicMerge"][
        "spec"]["volumes"][0]["hostPath"].update(path="/run/sage/tenants/team-a"),
    "example pod of another tenant": lambda d: find(d, "Pod")["spec"]["volumes"][0]["hostPath"].update(
        path="/run/sage/tenants/team-b"),
    "bad label value": lambda d: find(d, "Namespace")["metadata"]["labels"].update(x="not valid!"),
}


def main():
    root = sys.argv[1]
    docs = load(root)
    Checker.root = root
    problems = Checker(docs).run()
    for p in problems:
        print("FAIL:", p)

    def caught(mutate):
        mutated = copy.deepcopy(docs)
        mutate(mutated)
        return Checker(mutated).run()

    missed = missed_mutations(MUTATIONS, caught)
    return verdict(problems, missed, f"{len(docs)} manifests ok; {len(MUTATIONS)} broken variants all caught")


if __name__ == "__main__":
    sys.exit(main())
