// Checks across the objects of one rendering (a kustomize overlay or a Helm release) that no
// schema can see: selectors that select, ports that exist, the server.yaml the Deployment
// mounts (keys, ports, paths), probes on the gRPC port, a grace period longer than the
// preStop sleep plus the drain, and only flags twin-server defines.
"use strict";

const path = require("path");
const yaml = require("js-yaml");
const src = require("./sources");

const CONFIG_FLAG = "--config";

function selects(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}

// A LabelSelector with matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist).
function selectsObject(selector, labels) {
  const l = labels || {};
  const exprOk = (e) => {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    switch (e.operator) {
      case "In": return has && e.values.includes(l[e.key]);
      case "NotIn": return !has || !e.values.includes(l[e.key]);
      case "Exists": return has;
      case "DoesNotExist": return !has;
      default: return false;
    }
  };
  return selects(selector.matchLabels, l) && (selector.matchExpressions || []).every(exprOk);
}

function flagValue(args, name) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name) return args[i + 1];
    if (args[i].startsWith(`${name}=`)) return args[i].slice(name.length + 1);
  }
  return undefined;
}

function portOf(address) {
  const m = /:(\d+)$/.exec(address || "");
  return m ? Number(m[1]) : null;
}

function mountFor(container, volumes, file) {
  const mounts = (container.volumeMounts || []).filter((m) => file === m.mountPath || file.startsWith(`${m.mountPath}/`));
  mounts.sort((a, b) => b.mountPath.length - a.mountPath.length);
  if (!mounts.length) return null;
  return { mount: mounts[0], volume: volumes.find((v) => v.name === mounts[0].name) };
}

// Checks one twin-server container; returns problems prefixed with `where`.
function checkServerContainer(where, podSpec, container, objects, facts, configSchema) {
  const p = [];
  const args = container.args || [];
  const volumes = podSpec.volumes || [];
  for (const a of args) {
    const m = /^--([A-Za-z_]+)/.exec(a);
    if (m && !facts.flags.includes(m[1])) p.push(`args: twin-server has no flag --${m[1]}`);
  }
  const configPath = flagValue(args, CONFIG_FLAG);
  if (!configPath) return [...p, `args: no ${CONFIG_FLAG}`].map((x) => `${where}: ${x}`);
  const found = mountFor(container, volumes, configPath);
  if (!found || !found.volume || !found.volume.configMap) {
    p.push(`${CONFIG_FLAG} ${configPath} is not on a ConfigMap volume`);
    return p.map((x) => `${where}: ${x}`);
  }
  const cm = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === found.volume.configMap.name);
  const key = path.relative(found.mount.mountPath, configPath);
  if (!cm || !cm.data || typeof cm.data[key] !== "string") {
    p.push(`ConfigMap ${found.volume.configMap.name} with key ${key} is not part of the rendering`);
    return p.map((x) => `${where}: ${x}`);
  }
  let config;
  try {
    config = yaml.load(cm.data[key]);
  } catch (e) {
    p.push(`ConfigMap ${cm.metadata.name} ${key}: bad YAML: ${e.message}`);
    return p.map((x) => `${where}: ${x}`);
  }
  for (const q of src.serverYamlProblems(config, facts.configKeys)) p.push(`ConfigMap ${cm.metadata.name} ${key}: ${q}`);
  if (configSchema) {
    const rest = { ...config };
    for (const k of ["listen_address", "metrics_address", "artifact_uri", "artifact_version", "cache_dir",
                     "admin", "tls"]) delete rest[k];
    if (!configSchema(rest)) {
      for (const e of configSchema.errors) p.push(`ConfigMap ${cm.metadata.name} ${key}: ${e.instancePath || "(top)"} ${e.message}`);
    }
  }

  const ports = Object.fromEntries((container.ports || []).map((x) => [x.name, x.containerPort]));
  const grpcPort = portOf(flagValue(args, "--listen") || config.listen_address || "0.0.0.0:50051");
  if (ports.grpc !== grpcPort) p.push(`container port 'grpc' (${ports.grpc}) differs from listen_address port ${grpcPort}`);
  const metricsAddress = config.metrics_address === undefined ? "0.0.0.0:9090" : config.metrics_address;
  if (metricsAddress && ports.metrics !== portOf(metricsAddress)) {
    p.push(`container port 'metrics' (${ports.metrics}) differs from metrics_address ${metricsAddress}`);
  }
  // With TLS the kubelet's gRPC probe cannot connect, so the probes are HTTP on the metrics
  // port: /healthz (the process answers) for liveness, /readyz (SERVING) for the others.
  const tls = config.tls && config.tls.cert_file;
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    const pr = container[probe];
    if (tls) {
      const want = probe === "livenessProbe" ? "/healthz" : "/readyz";
      if (!pr || !pr.httpGet) { p.push(`${probe}: TLS is on, expected an HTTP probe on the metrics port`); continue; }
      if (!metricsAddress || pr.httpGet.port !== portOf(metricsAddress)) {
        p.push(`${probe}: port ${pr.httpGet.port} is not the metrics port (${metricsAddress || "off"})`);
      }
      if (pr.httpGet.path !== want) p.push(`${probe}: path ${pr.httpGet.path}, expected ${want}`);
      if (!facts.httpPaths.includes(pr.httpGet.path)) {
        p.push(`${probe}: the metrics port does not answer ${pr.httpGet.path} (it answers ${facts.httpPaths.join(", ")})`);
      }
      continue;
    }
    if (!pr || !pr.grpc) { p.push(`${probe}: expected a gRPC probe`); continue; }
    if (pr.grpc.port !== grpcPort) p.push(`${probe}: port ${pr.grpc.port} is not the gRPC port ${grpcPort}`);
    if (pr.grpc.service && pr.grpc.service !== facts.serviceName) {
      p.push(`${probe}: service '${pr.grpc.service}' is not reported by the server (${facts.serviceName} or "")`);
    }
  }
  // OpenBLAS starts its threads when the library loads, before twin-server blocks SIGTERM for
  // its signal thread; with more than one BLAS thread SIGTERM kills the process undrained.
  const blas = (container.env || []).find((e) => e.name === "OPENBLAS_NUM_THREADS");
  if (!blas || blas.value !== "1") p.push("env OPENBLAS_NUM_THREADS must be \"1\" (SIGTERM drain, no nested BLAS threads)");
  const writable = (dir) => {
    const f = mountFor(container, volumes, dir);
    return f && !f.mount.readOnly;
  };
  const cacheDir = flagValue(args, "--cache_dir") || config.cache_dir;
  if (!cacheDir || !writable(cacheDir)) p.push(`cache_dir ${cacheDir} is not on a writable volume`);
  const sc = { ...(podSpec.securityContext || {}), ...(container.securityContext || {}) };
  if (sc.readOnlyRootFilesystem && !writable("/tmp")) p.push("read-only root filesystem without a writable /tmp");
  if (sc.runAsNonRoot !== true || sc.runAsUser !== 10001) p.push("expected runAsNonRoot with runAsUser 10001 (the image's user)");
  const uri = flagValue(args, "--artifact_uri") || config.artifact_uri || "";
  if (uri.startsWith("file://") && !mountFor(container, volumes, uri.slice("file://".length))) {
    p.push(`artifact_uri ${uri} is not on a mounted volume`);
  }

  const drainS = Math.ceil((config.drain_timeout_ms === undefined ? 30000 : config.drain_timeout_ms) / 1000);
  const pre = container.lifecycle && container.lifecycle.preStop;
  const sleepS = pre && pre.exec && pre.exec.command[0] === "sleep" ? Number(pre.exec.command[1]) : 0;
  const grace = podSpec.terminationGracePeriodSeconds === undefined ? 30 : podSpec.terminationGracePeriodSeconds;
  if (!(grace > sleepS + drainS)) {
    p.push(`terminationGracePeriodSeconds ${grace} must exceed preStop sleep ${sleepS} s + drain_timeout ${drainS} s`);
  }
  return p.map((x) => `${where}: ${x}`);
}

function check(objects, facts, configSchema) {
  const problems = [];
  const deployments = objects.filter((o) => o.kind === "Deployment");
  const podLabels = deployments.map((d) => d.spec.template.metadata.labels);
  for (const d of deployments) {
    const where = `Deployment/${d.metadata.name}`;
    if (!selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels)) {
      problems.push(`${where}: selector does not match its pod template`);
    }
    const spec = d.spec.template.spec;
    const server = spec.containers.find((c) => c.name === "twin-server");
    if (!server) problems.push(`${where}: no container named twin-server`);
    else problems.push(...checkServerContainer(where, spec, server, objects, facts, configSchema));
  }
  for (const s of objects.filter((o) => o.kind === "Service")) {
    const where = `Service/${s.metadata.name}`;
    const i = podLabels.findIndex((l) => selects(s.spec.selector, l));
    if (i < 0) { problems.push(`${where}: selector matches no Deployment's pods`); continue; }
    const names = deployments[i].spec.template.spec.containers.flatMap((c) => (c.ports || []).map((x) => x.name));
    for (const port of s.spec.ports) {
      if (typeof port.targetPort === "string" && !names.includes(port.targetPort)) {
        problems.push(`${where}: targetPort ${port.targetPort} is not a container port`);
      }
    }
  }
  for (const h of objects.filter((o) => o.kind === "HorizontalPodAutoscaler")) {
    const ref = h.spec.scaleTargetRef;
    if (!deployments.some((d) => d.metadata.name === ref.name && ref.kind === "Deployment")) {
      problems.push(`HorizontalPodAutoscaler/${h.metadata.name}: scaleTargetRef ${ref.kind}/${ref.name} is not rendered`);
    }
    if (h.spec.minReplicas > h.spec.maxReplicas) problems.push(`HorizontalPodAutoscaler/${h.metadata.name}: minReplicas > maxReplicas`);
    const res = deployments.find((d) => d.metadata.name === ref.name);
    const cpuMetric = (h.spec.metrics || []).some((m) => m.type === "Resource" && m.resource.name === "cpu");
    if (res && cpuMetric && !res.spec.template.spec.containers.every((c) => c.resources && c.resources.requests && c.resources.requests.cpu)) {
      problems.push(`HorizontalPodAutoscaler/${h.metadata.name}: CPU utilisation needs a CPU request on every container`);
    }
  }
  for (const b of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    if (!podLabels.some((l) => selects(b.spec.selector.matchLabels, l))) {
      problems.push(`PodDisruptionBudget/${b.metadata.name}: selector matches no Deployment's pods`);
    }
  }
  for (const m of objects.filter((o) => o.kind === "ServiceMonitor")) {
    const chosen = objects.filter((s) => s.kind === "Service" && selectsObject(m.spec.selector, s.metadata.labels));
    const svc = chosen[0];
    if (chosen.length !== 1) problems.push(`ServiceMonitor/${m.metadata.name}: selects ${chosen.length} Services, expected 1`);
    else if (!m.spec.endpoints.every((e) => svc.spec.ports.some((x) => x.name === e.port))) {
      problems.push(`ServiceMonitor/${m.metadata.name}: endpoint port not on Service/${svc.metadata.name}`);
    }
  }
  return problems;
}

module.exports = { check };
