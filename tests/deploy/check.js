// Offline checks of the deployment files (run by scripts/check-deploy.sh):
//   kustomize   deploy/base and both overlays built, every object validated against the
//               Kubernetes schemas (unknown fields included), cross-object consistency, and
//               the build compared with `kubectl kustomize` where kubectl exists;
//   helm        values.yaml and the test values files against values.schema.json, the schema's
//               server.yaml part against server/server_config.cc, the chart rendered for each
//               values file and validated like the overlays, and bad values refused;
//   docker      the Dockerfile's stages, COPY sources, user, ports, health check, and the
//               server.yaml baked into the image;
//   monitoring  every metric the dashboard and the rules read is exported by the server.
// A last group feeds each checker a broken input and expects it to complain.
// Prints one line per check and a closing "N passed, M failed".
"use strict";

const fs = require("fs");
const path = require("path");
const util = require("util");
const { execFileSync } = require("child_process");
const yaml = require("js-yaml");
const Ajv = require("ajv");

const { validateObject } = require("./lib/k8s-validate");
const kustomize = require("./lib/kustomize");
const helm = require("./lib/helm");
const consistency = require("./lib/consistency");
const src = require("./lib/sources");

const ROOT = src.ROOT;
const CHART = path.join(ROOT, "helm", "twin-merging");
const VALUES_DIR = path.join(__dirname, "helm-values");
// Metrics that rules may reference before the server exports them (the rule says so).
const PLANNED_METRICS = new Set([]);
// server.yaml fields the chart sets itself; values.schema.json leaves them out of `config`.
const CHART_MANAGED = ["listen_address", "metrics_address", "artifact_uri", "artifact_version", "cache_dir",
                       "admin", "tls"];

const results = [];
function check(name, fn) {
  let problems;
  try {
    problems = fn() || [];
  } catch (e) {
    problems = [`${e.message}`];
  }
  results.push({ name, problems });
  console.log(problems.length ? `FAIL - ${name}\n${problems.map((p) => `       ${p}`).join("\n")}` : `ok   - ${name}`);
}

function facts() {
  return { configKeys: src.serverConfigKeys(), flags: src.serverFlags(), serviceName: src.healthServiceName(),
           httpPaths: src.metricsHttpPaths() };
}

function ajvFor(schema) {
  const ajv = new Ajv({ allErrors: true, strict: false });
  return ajv.compile(schema);
}

const chartSchema = JSON.parse(fs.readFileSync(path.join(CHART, "values.schema.json"), "utf8"));
const configSchema = ajvFor({ ...chartSchema.properties.config, $schema: undefined });

function objectProblems(objects) {
  const problems = [];
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata && o.metadata.name}`;
    for (const p of validateObject(o)) problems.push(`${id}: ${p}`);
  }
  return problems.concat(consistency.check(objects, facts(), configSchema));
}

// ---------------------------------------------------------------------------------------
// kustomize

function kubectlKustomize(dir) {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
  } catch (e) {
    return null;
  }
  return yaml.loadAll(execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" })).filter(Boolean);
}

for (const dir of ["deploy/base", "deploy/overlays/cpu", "deploy/overlays/gpu"]) {
  let objects = [];
  check(`kustomize ${dir}: objects valid and consistent`, () => {
    objects = kustomize.build(path.join(ROOT, dir));
    return objectProblems(objects);
  });
  const theirs = kubectlKustomize(path.join(ROOT, dir));
  if (theirs) {
    check(`kustomize ${dir}: same objects as kubectl kustomize`, () =>
      util.isDeepStrictEqual(kustomize.canonical(objects), kustomize.canonical(theirs))
        ? []
        : ["the built objects differ from `kubectl kustomize` (tests/deploy/lib/kustomize.js needs a fix)"]);
  }
}

check("kustomize deploy/overlays/gpu: one nvidia.com/gpu, device cuda, GPU node toleration", () => {
  const d = kustomize.build(path.join(ROOT, "deploy/overlays/gpu")).find((o) => o.kind === "Deployment");
  const spec = d.spec.template.spec;
  const c = spec.containers.find((x) => x.name === "twin-server");
  const p = [];
  if (String(c.resources.limits["nvidia.com/gpu"]) !== "1") p.push("no nvidia.com/gpu limit of 1");
  if (c.args.join(" ").indexOf("--device cuda") < 0) p.push("no --device cuda");
  if (!(spec.tolerations || []).some((t) => t.key === "nvidia.com/gpu")) p.push("no nvidia.com/gpu toleration");
  if (!spec.nodeSelector) p.push("no nodeSelector");
  if (!/-cuda$/.test(c.image)) p.push(`image ${c.image} is not a cuda variant`);
  return p;
});

// ---------------------------------------------------------------------------------------
// helm values and schema

const validateValues = ajvFor(chartSchema);
const scenarios = [["values.yaml", []], ...fs.readdirSync(VALUES_DIR).sort().filter((f) => f.endsWith(".yaml")).map((f) => [f, [path.join(VALUES_DIR, f)]])];

for (const [name, files] of scenarios) {
  check(`helm values ${name}: valid against values.schema.json`, () => {
    const values = helm.loadValues(CHART, files);
    return validateValues(values) ? [] : validateValues.errors.map((e) => `${e.instancePath || "(top)"}: ${e.message}`);
  });
}

check("helm values.schema.json: config lists exactly the server.yaml keys of server_config.cc", () => {
  const keys = src.serverConfigKeys();
  const p = [];
  const props = chartSchema.properties.config.properties;
  const want = keys[""].filter((k) => !CHART_MANAGED.includes(k));
  for (const k of want) if (!props[k]) p.push(`config.${k}: accepted by the server, missing from the schema`);
  for (const k of Object.keys(props)) if (!want.includes(k)) p.push(`config.${k}: in the schema, not accepted by the server`);
  for (const [section, subKeys] of Object.entries(keys)) {
    if (!section || !props[section]) continue;
    const sub = props[section].properties || {};
    for (const k of subKeys) if (!sub[k]) p.push(`config.${section}.${k}: accepted by the server, missing from the schema`);
    for (const k of Object.keys(sub)) if (!subKeys.includes(k)) p.push(`config.${section}.${k}: in the schema, not accepted by the server`);
  }
  return p;
});

// ---------------------------------------------------------------------------------------
// helm rendering

// Go prints a float64 of a million or more as 1e+06; YAML reads that back as a float, which
// the API server refuses for integer fields. Such a line means an `int` is missing.
const EXPONENT_NUMBER = /^(\s*(?:- |[^:#\n]+:\s+))-?[0-9.]+e[+-][0-9]+\s*$/m;

function renderObjects(files) {
  const out = helm.render(CHART, files);
  const objects = [];
  const problems = [];
  for (const m of out.manifests) {
    const bad = EXPONENT_NUMBER.exec(m.text);
    if (bad) problems.push(`${m.template}: number in exponent form (missing int?): ${bad[0].trim()}`);
    for (const doc of yaml.loadAll(m.text, null, { filename: m.template })) if (doc) objects.push(doc);
  }
  return { objects, notes: out.notes, problems };
}

const EXPECTED_KINDS = {
  "values.yaml": ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"],
  "full.yaml": ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount", "ServiceMonitor"],
  "minimal.yaml": ["ConfigMap", "Deployment", "Service"],
};

for (const [name, files] of scenarios) {
  check(`helm template (${name}): objects valid and consistent`, () => {
    const { objects, notes, problems } = renderObjects(files);
    const p = problems.concat(objectProblems(objects));
    const kinds = objects.map((o) => o.kind).sort();
    if (EXPECTED_KINDS[name] && !util.isDeepStrictEqual(kinds, EXPECTED_KINDS[name])) {
      p.push(`rendered kinds ${kinds.join(", ")}; expected ${EXPECTED_KINDS[name].join(", ")}`);
    }
    if (!/twin-client --target/.test(notes)) p.push("NOTES.txt rendered without the twin-client commands");
    return p;
  });
}

check("helm template (full.yaml): GPU limit, Secret env, queue metric, merge Job wiring", () => {
  const { objects } = renderObjects([path.join(VALUES_DIR, "full.yaml")]);
  const p = [];
  const d = objects.find((o) => o.kind === "Deployment");
  const c = d.spec.template.spec.containers[0];
  if (c.resources.limits["nvidia.com/gpu"] !== 1) p.push("Deployment: no nvidia.com/gpu limit");
  const secret = objects.find((o) => o.kind === "Secret");
  const envFromSecret = (cont) => (cont.env || []).filter((e) => e.valueFrom && e.valueFrom.secretKeyRef && e.valueFrom.secretKeyRef.name === secret.metadata.name).map((e) => e.name);
  for (const k of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
    if (!envFromSecret(c).includes(k)) p.push(`Deployment: ${k} not from the Secret`);
    if (!Object.keys(secret.stringData).includes(k)) p.push(`Secret: no key ${k}`);
  }
  for (const k of ["AWS_REGION", "TWIN_S3_ENDPOINT"]) if (!c.env.some((e) => e.name === k)) p.push(`Deployment: no ${k}`);
  const hpa = objects.find((o) => o.kind === "HorizontalPodAutoscaler");
  if (!hpa.spec.metrics.some((m) => m.type === "Pods" && m.pods.metric.name === "twin_queue_waiting")) p.push("HPA: no twin_queue_waiting Pods metric");
  const job = objects.find((o) => o.kind === "Job");
  const jc = job.spec.template.spec.containers[0];
  if (jc.command[0] !== "twin-merge" || jc.args[1] !== "/etc/twin-merge/merge.yaml") p.push("Job: not twin-merge --config /etc/twin-merge/merge.yaml");
  const mcm = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-merge-config"));
  const merge = yaml.load(mcm.data["merge.yaml"]);
  if (merge.output !== "s3://models/twin") p.push(`merge.yaml output ${merge.output}, expected artifact.uri`);
  p.push(...src.mergeYamlProblems(merge, src.mergeConfigKeys()).map((x) => `merge.yaml: ${x}`));
  if (!envFromSecret(jc).includes("AWS_ACCESS_KEY_ID")) p.push("Job: no credentials from the Secret");
  const grace = d.spec.template.spec.terminationGracePeriodSeconds;
  if (grace !== 90) p.push(`terminationGracePeriodSeconds ${grace}, expected the value's 90`);
  return p;
});

check("helm template (tls.yaml): Secrets mounted where server.yaml reads them, HTTP probes, Admin policy", () => {
  const { objects } = renderObjects([path.join(VALUES_DIR, "tls.yaml")]);
  const p = [];
  const d = objects.find((o) => o.kind === "Deployment");
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  const cm = objects.find((o) => o.kind === "ConfigMap" && o.data && o.data["server.yaml"]);
  const config = yaml.load(cm.data["server.yaml"]);
  // Each file server.yaml names must sit on the mount of the Secret that holds it.
  const secretAt = (file) => {
    const m = (c.volumeMounts || []).find((vm) => file.startsWith(vm.mountPath + "/"));
    const v = m && pod.volumes.find((x) => x.name === m.name);
    return v && v.secret ? v.secret.secretName : null;
  };
  const want = [["tls.cert_file", config.tls && config.tls.cert_file, "twin-tls"],
                ["tls.key_file", config.tls && config.tls.key_file, "twin-tls"],
                ["tls.client_ca_file", config.tls && config.tls.client_ca_file, "twin-client-ca"],
                ["admin.token_file", config.admin && config.admin.token_file, "twin-admin-token"]];
  for (const [field, file, secret] of want) {
    if (!file) { p.push(`server.yaml has no ${field}`); continue; }
    if (secretAt(file) !== secret) p.push(`${field} ${file} is not on the Secret ${secret}'s mount`);
  }
  if (config.tls && config.tls.refresh_interval_s !== 30) p.push("tls.refresh_interval_s is not the value's 30");
  if (!config.admin || !/^0\.0\.0\.0:/.test(config.admin.listen_address || "")) p.push("admin.exposed without an all-address Admin listener");
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    if (!c[probe] || !c[probe].httpGet) p.push(`${probe}: not an HTTP probe under TLS`);
  }
  const np = objects.find((o) => o.kind === "NetworkPolicy");
  const adminRule = np && np.spec.ingress.find((r) => r.ports.some((x) => x.port === "admin"));
  if (!adminRule || adminRule.from.length !== 1 || !adminRule.from[0].namespaceSelector) {
    p.push("NetworkPolicy: the Admin port is not limited to networkPolicy.adminFrom");
  }
  return p;
});

const BAD_VALUES = [
  [{ lifecycle: { terminationGracePeriodSeconds: 20 } }, /terminationGracePeriodSeconds \(20\) must exceed/],
  [{ mergeJob: { enabled: true } }, /mergeJob\.config \(merge\.yaml\) is required/],
  [{ objectStore: { create: true } }, /objectStore\.accessKeyId is required/],
  [{ cacheVolume: { type: "persistentVolumeClaim" } }, /cacheVolume\.claimName is required/],
];
for (const [over, want] of BAD_VALUES) {
  check(`helm template refuses ${JSON.stringify(over)}`, () => {
    try {
      renderObjects([over]);
    } catch (e) {
      return want.test(e.message) ? [] : [`failed with an unexpected message: ${e.message}`];
    }
    return ["rendered without an error"];
  });
}

check("helm values.schema.json refuses unknown and out-of-range values", () => {
  const p = [];
  const bad = [
    { config: { cache: { polcy: "fuse" } } },
    { config: { listen_address: "0.0.0.0:1" } },
    { config: { cluster_key: { grid: 5000 } } },
    { config: { device: "tpu" } },
    { artifact: { uri: "gs://bucket" } },
    { replicas: 3 },
  ];
  for (const over of bad) {
    if (validateValues(helm.loadValues(CHART, [over]))) p.push(`accepted ${JSON.stringify(over)}`);
  }
  return p;
});

// ---------------------------------------------------------------------------------------
// docker

check("Dockerfile: stages per VARIANT, COPY sources exist, runtime user, ports, health check", () => {
  const text = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const p = [];
  const stages = lines.filter((l) => /^FROM /i.test(l)).map((l) => (/ AS (\S+)$/i.exec(l) || [])[1]);
  for (const variant of ["cpu", "cuda"]) {
    for (const s of [`build-${variant}`, `runtime-${variant}`]) if (!stages.includes(s)) p.push(`no stage ${s}`);
  }
  if (!/^ARG VARIANT=cpu$/m.test(text)) p.push("VARIANT does not default to cpu");
  for (const l of lines.filter((x) => /^COPY /i.test(x) && !/--from=/.test(x))) {
    const parts = l.split(/\s+/).slice(1).filter((x) => !x.startsWith("--"));
    for (const source of parts.slice(0, -1)) {
      if (source.includes("${")) continue;
      if (!fs.existsSync(path.join(ROOT, source))) p.push(`COPY source ${source} does not exist`);
    }
  }
  // Every folder the top-level CMakeLists.txt adds (tests aside: the image builds none) must
  // be copied into the build stage.
  const cmake = fs.readFileSync(path.join(ROOT, "CMakeLists.txt"), "utf8");
  for (const m of cmake.matchAll(/add_subdirectory\(\s*([\w-]+)\s*\)/g)) {
    if (m[1] === "tests") continue;
    if (!new RegExp(`^COPY ${m[1]}/ ${m[1]}/$`, "m").test(text)) p.push(`the build stage does not COPY ${m[1]}/ (added by CMakeLists.txt)`);
  }
  const runtime = text.slice(text.lastIndexOf("\nFROM "));
  const need = [
    [/^USER 10001(:10001)?$/m, "USER 10001"],
    [/^EXPOSE 50051 9090$/m, "EXPOSE 50051 9090"],
    [/^ENV OPENBLAS_NUM_THREADS=1$/m, "ENV OPENBLAS_NUM_THREADS=1"],
    [/^ENTRYPOINT \["twin-server"\]$/m, 'ENTRYPOINT ["twin-server"]'],
    [/HEALTHCHECK .*CMD \["twin-client", "--target", "127\.0\.0\.1:50051", "--timeout_ms", "2000", "health"\]/, "HEALTHCHECK twin-client ... health"],
  ];
  for (const [re, what] of need) if (!re.test(runtime)) p.push(`runtime stage lacks ${what}`);
  for (const label of ["title", "description", "source", "licenses", "version"]) {
    if (!runtime.includes(`org.opencontainers.image.${label}=`)) p.push(`no OCI label ${label}`);
  }
  for (const bin of ["twin-server", "twin-merge", "twin-client", "twin-inspect"]) {
    if (!new RegExp(`--target[^\\n]*\\b${bin}\\b`).test(text)) p.push(`${bin} is not built`);
  }
  return p;
});

check("deploy/docker/server.yaml (the image's default config): keys and values", () => {
  const config = yaml.load(fs.readFileSync(path.join(ROOT, "deploy/docker/server.yaml"), "utf8"));
  const p = src.serverYamlProblems(config, src.serverConfigKeys());
  const rest = { ...config };
  for (const k of CHART_MANAGED) delete rest[k];
  if (!configSchema(rest)) p.push(...configSchema.errors.map((e) => `${e.instancePath}: ${e.message}`));
  if (config.listen_address !== "0.0.0.0:50051") p.push("listen_address is not the HEALTHCHECK's port 50051");
  return p;
});

// ---------------------------------------------------------------------------------------
// monitoring

function dashboardExprs(dash) {
  const exprs = [];
  const visit = (panels) => {
    for (const panel of panels || []) {
      for (const t of panel.targets || []) if (t.expr) exprs.push([`panel "${panel.title}"`, t.expr]);
      visit(panel.panels);
    }
  };
  visit(dash.panels);
  for (const v of (dash.templating && dash.templating.list) || []) {
    const q = typeof v.query === "string" ? v.query : v.query && v.query.query;
    if (v.type === "query" && q) exprs.push([`variable ${v.name}`, q]);
  }
  return exprs;
}

function metricProblems(exprs, allowPlanned) {
  const metrics = src.metricNames();
  const p = [];
  for (const [where, expr] of exprs) {
    for (const m of src.metricsInExpr(expr)) {
      if (src.isExported(m, metrics)) continue;
      if (allowPlanned && PLANNED_METRICS.has(m)) continue;
      p.push(`${where}: ${m} is not exported by twin-server (server/metrics.{h,cc})`);
    }
  }
  return p;
}

check("grafana dashboard: valid JSON, unique panel ids, every metric exported", () => {
  const dash = JSON.parse(fs.readFileSync(path.join(ROOT, "deploy/grafana/twin-merging.json"), "utf8"));
  const p = [];
  const ids = [];
  const visit = (panels) => (panels || []).forEach((x) => { ids.push(x.id); visit(x.panels); });
  visit(dash.panels);
  if (new Set(ids).size !== ids.length) p.push("panel ids are not unique");
  const exprs = dashboardExprs(dash);
  if (exprs.length < 10) p.push(`only ${exprs.length} queries found`);
  return p.concat(metricProblems(exprs, false));
});

check("prometheus rules: every metric exported (or listed as planned)", () => {
  const rules = yaml.load(fs.readFileSync(path.join(ROOT, "deploy/prometheus/rules.yaml"), "utf8"));
  const exprs = rules.groups.flatMap((g) => g.rules.map((r) => [r.record || r.alert, r.expr]));
  const metrics = src.metricNames();
  const p = metricProblems(exprs, true);
  for (const m of PLANNED_METRICS) {
    if (metrics.names.has(m)) p.push(`${m} is now exported: drop it from PLANNED_METRICS and the rule's "until then" note`);
  }
  return p;
});

// ---------------------------------------------------------------------------------------
// The checkers themselves: each must reject a broken input.

check("self-test: the checkers reject broken inputs", () => {
  const p = [];
  const base = kustomize.build(path.join(ROOT, "deploy/base"));
  const broken = (mutate) => {
    const objs = JSON.parse(JSON.stringify(base));
    mutate(objs.find((o) => o.kind === "Deployment"), objs);
    return objectProblems(objs);
  };
  const cases = [
    ["misspelt field", (d) => { d.spec.template.spec.containers[0].readinesProbe = {}; }, /readinesProbe: unknown field/],
    ["wrong type", (d) => { d.spec.template.spec.containers[0].ports[0].containerPort = "50051"; }, /containerPort: must be integer/],
    ["unknown server flag", (d) => { d.spec.template.spec.containers[0].args.push("--thread", "2"); }, /no flag --thread/],
    ["probe port", (d) => { d.spec.template.spec.containers[0].livenessProbe.grpc.port = 9090; }, /livenessProbe: port 9090/],
    ["OpenBLAS threads", (d) => { d.spec.template.spec.containers[0].env.shift(); }, /OPENBLAS_NUM_THREADS must be/],
    ["short grace period", (d) => { d.spec.template.spec.terminationGracePeriodSeconds = 30; }, /must exceed preStop sleep/],
    ["unknown server.yaml key", (d, objs) => { const cm = objs.find((o) => o.kind === "ConfigMap"); cm.data["server.yaml"] += "\nbatching_size: 3\n"; }, /batching_size: unknown key/],
    ["Service selector", (d, objs) => { objs.find((o) => o.kind === "Service").spec.selector = { app: "other" }; }, /matches no Deployment/],
  ];
  for (const [what, mutate, want] of cases) {
    const problems = broken(mutate);
    if (!problems.some((x) => want.test(x))) p.push(`${what}: not reported (got: ${problems.join("; ") || "nothing"})`);
  }
  // Under TLS the probes are HTTP: a path the metrics port does not answer, or a gRPC probe,
  // must be reported.
  const tlsObjects = renderObjects([path.join(VALUES_DIR, "tls.yaml")]).objects;
  const tlsCases = [
    ["TLS probe path", (c) => { c.readinessProbe.httpGet.path = "/ready"; }, /readinessProbe: path \/ready, expected \/readyz/],
    ["TLS with a gRPC probe", (c) => { c.livenessProbe = { grpc: { port: 50051 } }; }, /livenessProbe: TLS is on, expected an HTTP probe/],
  ];
  for (const [what, mutate, want] of tlsCases) {
    const objs = JSON.parse(JSON.stringify(tlsObjects));
    mutate(objs.find((o) => o.kind === "Deployment").spec.template.spec.containers[0]);
    const problems = objectProblems(objs);
    if (!problems.some((x) => want.test(x))) p.push(`${what}: not reported (got: ${problems.join("; ") || "nothing"})`);
  }
  if (!src.mergeYamlProblems({ merge_method: "ties", models: [{ model: "a.pt", weights: 1 }] }, src.mergeConfigKeys()).length) {
    p.push("an unknown merge.yaml key is not reported");
  }
  if (!metricProblems([["t", "rate(twin_no_such_metric_total[5m])"]], false).length) p.push("an unknown metric is not reported");
  if (metricProblems([["t", 'histogram_quantile(0.9, sum by (le) (rate(twin_request_latency_seconds_bucket{stage="total"}[5m])))']], false).length) {
    p.push("a histogram's _bucket series is reported as unknown");
  }
  if (metricProblems([["t", "namespace_job:twin_requests:rate5m > 0"]], false).length) p.push("a recording rule's name is read as a metric");
  return p;
});

const failed = results.filter((r) => r.problems.length).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
