#!/usr/bin/env python3
"""Validates Kubernetes manifests against Knative CRD schemas, without a cluster.

Usage: validate_knative.py CRD_DIR FILE_OR_- [FILE_OR_- ...]

CRD_DIR holds CustomResourceDefinition YAML files (tests/data/knative-crds/: Knative Service,
Revision, Trigger, Broker). Every YAML document of every FILE (`-` reads stdin) whose
apiVersion group and kind match a CRD there is validated (jsonschema, Draft 7) against that
CRD's openAPIV3Schema for the document's version. One line per document:

    ok              knative/service.yaml#1 Service slmfn (serving.knative.dev/v1): valid against services.serving.knative.dev v1
    not validated   knative/sinkbinding.yaml#1 SinkBinding slmfn (sources.knative.dev/v1): no CRD schema
    FAIL            knative/trigger.yaml#1 Trigger ci-triage (eventing.knative.dev/v1): 1 error
      knative/trigger.yaml#1 Trigger ci-triage: $.spec.delivery.retry: '3' is not of type 'integer'

and a summary line. Documents are numbered from 1 in each file (`#N`); empty documents are
skipped.

Exit status: 0 when every document is valid or has no CRD here, 1 when any document is
invalid or a file has no document (or is not YAML), 2 on a usage error or an unusable CRD dir.

The CRD schema is read the way the API server reads it (structural schema, strict field
validation as `kubectl apply` asks for by default):

- an object schema with `properties` and without `x-kubernetes-preserve-unknown-fields` or
  `additionalProperties` rejects unknown fields (the API server would refuse or prune them);
- `x-kubernetes-int-or-string: true` is `anyOf: [integer, string]`; `nullable: true` adds
  `null`; every other `x-kubernetes-*` key is ignored;
- `apiVersion`, `kind` and `metadata` are always allowed at the top level, and `metadata`
  (typed just `object` in a CRD) is checked as an ObjectMeta: known fields only, `name` (or
  `generateName`) present, labels and annotations maps of strings.

The Knative CRDs keep parts of their objects open (`x-kubernetes-preserve-unknown-fields` on
the pod template parts and on Trigger's spec), where Knative's own webhook still refuses
unknown fields. So, in addition:

- the containers of a Service (`spec.template.spec.containers[*]`, `initContainers[*]`) and of
  a Revision (`spec.containers[*]`) may only use fields of the Kubernetes Container type;
- annotation keys under `autoscaling.knative.dev/` (in `metadata` and in the revision
  template's `metadata`) must be known autoscaling annotations, with values of the right form;
- a Trigger's spec and the delivery spec of a Trigger or Broker may only use Knative's fields,
  `backoffPolicy` is linear or exponential and `backoffDelay` an ISO-8601 duration.

Needs PyYAML and jsonschema (tested with PyYAML 6.0.3, jsonschema 4.25.1).
"""

import copy
import os
import re
import sys

import yaml
from jsonschema import Draft7Validator

# Fields of the Kubernetes core/v1 Container type (Kubernetes 1.34).
K8S_CONTAINER_FIELDS = frozenset(
    {
        "args",
        "command",
        "env",
        "envFrom",
        "image",
        "imagePullPolicy",
        "lifecycle",
        "livenessProbe",
        "name",
        "ports",
        "readinessProbe",
        "resizePolicy",
        "resources",
        "restartPolicy",
        "restartPolicyRules",
        "securityContext",
        "startupProbe",
        "stdin",
        "stdinOnce",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "tty",
        "volumeDevices",
        "volumeMounts",
        "workingDir",
    }
)

# Fields of the Kubernetes ObjectMeta type.
OBJECT_META_FIELDS = frozenset(
    {
        "annotations",
        "creationTimestamp",
        "deletionGracePeriodSeconds",
        "deletionTimestamp",
        "finalizers",
        "generateName",
        "generation",
        "labels",
        "managedFields",
        "name",
        "namespace",
        "ownerReferences",
        "resourceVersion",
        "selfLink",
        "uid",
    }
)

AUTOSCALING_PREFIX = "autoscaling.knative.dev/"

# Go durations (`60s`, `1m30s`, `500ms`, `0`), as Knative parses them with time.ParseDuration.
GO_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$")
NON_NEGATIVE_INT = re.compile(r"^[0-9]+$")
POSITIVE_NUMBER = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
# ISO-8601 durations as Knative Eventing's delivery spec takes them (`PT0.5S`, `PT1M`, `P1D`).
ISO_DURATION = re.compile(
    r"^P(?!$)([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?"
    r"(T(?=[0-9.])([0-9]+H)?([0-9]+M)?([0-9]+(\.[0-9]+)?S)?)?$"
)


def _go_duration(value):
    return None if GO_DURATION.match(value) else "a duration such as 60s, 5m or 1h30m"


def _integer(value):
    return None if NON_NEGATIVE_INT.match(value) else "a non-negative integer, as a string"


def _positive_integer(value):
    if NON_NEGATIVE_INT.match(value) and int(value) >= 1:
        return None
    return "an integer >= 1, as a string"


def _positive_number(value):
    if POSITIVE_NUMBER.match(value) and float(value) > 0:
        return None
    return "a number > 0, as a string"


def _percentage(value):
    if POSITIVE_NUMBER.match(value) and 0 < float(value) <= 100:
        return None
    return "a percentage in (0, 100], as a string"


def _panic_threshold(value):
    if POSITIVE_NUMBER.match(value) and 110 <= float(value) <= 1000:
        return None
    return "a percentage in [110, 1000], as a string"


KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")


def _metric(value, autoscaler_class=KPA):
    """KPA scales on concurrency or rps; HPA on cpu, memory or a custom metric (a Prometheus
    adapter's metric name, e.g. slmfn_model_queue_depth); other classes are not checked."""
    if autoscaler_class == KPA:
        return None if value in ("concurrency", "rps") else "concurrency or rps (the KPA's metrics)"
    if autoscaler_class == HPA:
        if value in ("cpu", "memory") or METRIC_NAME.match(value):
            return None
        return "cpu, memory or a custom metric name (the HPA class)"
    return None if value else "a metric name"


def _class(value):
    if value.endswith(".autoscaling.knative.dev"):
        return None
    return "an autoscaler class such as kpa.autoscaling.knative.dev or hpa.autoscaling.knative.dev"


def _url(value):
    if re.match(r"^https?://[^\s/]+", value):
        return None
    return "an http(s) URL"


def _promql(value):
    # Not parsed: a non-empty query whose brackets pair up.
    pairs, stack = {")": "(", "}": "{", "]": "["}, []
    for c in value:
        if c in "({[":
            stack.append(c)
        elif c in pairs:
            if not stack or stack.pop() != pairs[c]:
                return "a PromQL query (its brackets do not pair up)"
    return None if value.strip() and not stack else "a PromQL query"


# The autoscaling annotations Knative Serving knows (and those of its KEDA extension,
# autoscaler-keda, which reads them on the HPA class), each with a check of its value.
AUTOSCALING_ANNOTATIONS = {
    "min-scale": _integer,
    "max-scale": _integer,
    "initial-scale": _integer,
    "target": _positive_number,
    "metric": _metric,
    "class": _class,
    "scale-down-delay": _go_duration,
    "scale-to-zero-pod-retention-period": _go_duration,
    "window": _go_duration,
    "target-utilization-percentage": _percentage,
    "activation-scale": _positive_integer,
    "panic-window-percentage": _percentage,
    "panic-threshold-percentage": _panic_threshold,
    "prometheus-address": _url,
    "prometheus-query": _promql,
}

# Knative Eventing's fields where its CRDs preserve unknown fields but its webhook does not.
TRIGGER_SPEC_FIELDS = frozenset(
    {"broker", "brokerRef", "delivery", "filter", "filters", "subscriber"}
)
DELIVERY_FIELDS = frozenset(
    {
        "backoffDelay",
        "backoffPolicy",
        "deadLetterSink",
        "format",
        "retry",
        "retryAfterMax",  # experimental feature delivery-retryafter
        "timeout",  # experimental feature delivery-timeout
    }
)


class Failure(Exception):
    """A file that cannot be read as YAML documents."""


# --- YAML --------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (as kubectl does) and keeps timestamps as
    strings (Kubernetes reads `2024-01-01` as a string)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def load_documents(text, name):
    """The non-empty YAML documents of `text` (comment-only documents are skipped)."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]
    except yaml.YAMLError as e:
        raise Failure(f"{name}: not valid YAML: {' '.join(str(e).split())}") from None


# --- CRD schemas -------------------------------------------------------------------------


def translate(schema):
    """A Kubernetes structural schema as a Draft 7 JSON Schema (see the module docs)."""
    if isinstance(schema, list):
        return [translate(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: translate(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = translate(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    if schema.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        },
        "generateName": {"type": "string"},
        "namespace": {
            "type": "string",
            "maxLength": 63,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        },
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "selfLink": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}
assert set(OBJECT_META["properties"]) == OBJECT_META_FIELDS


def top_level(schema):
    """The CRD's schema for a whole object: apiVersion, kind and metadata always allowed."""
    schema = copy.deepcopy(schema)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = OBJECT_META
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return schema


def load_crds(crd_dir):
    """{(group, kind): {version: Draft7Validator}} of the CRDs in `crd_dir`, and the CRD
    names."""
    crds = {}
    names = {}
    files = sorted(f for f in os.listdir(crd_dir) if f.endswith((".yaml", ".yml")))
    for file in files:
        path = os.path.join(crd_dir, file)
        with open(path, encoding="utf-8") as f:
            docs = load_documents(f.read(), path)
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc.get("spec") or {}
            group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
            for version in spec.get("versions") or []:
                raw = ((version.get("schema") or {}).get("openAPIV3Schema")) or (
                    (spec.get("validation") or {}).get("openAPIV3Schema")
                )
                if not raw:
                    continue
                schema = top_level(translate(raw))
                Draft7Validator.check_schema(schema)
                crds.setdefault((group, kind), {})[version["name"]] = Draft7Validator(schema)
                names[(group, kind)] = (doc.get("metadata") or {}).get("name", file)
    if not crds:
        raise Failure(f"{crd_dir}: no CustomResourceDefinition with an openAPIV3Schema")
    return crds, names


# --- Checks ------------------------------------------------------------------------------


def json_path(parts):
    """`$.spec.template.spec.containers[0].image` for a list of keys and indexes."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(part)):
            out += f".{part}"
        else:
            out += "[" + repr(str(part)) + "]"
    return out


def schema_errors(validator, doc):
    """(path, message) of every schema violation; unknown fields get their own path."""
    errors = []
    for error in validator.iter_errors(doc):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = set(error.schema.get("properties", {}))
            patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
            extra = [
                k
                for k in error.instance
                if k not in known and not any(p.search(k) for p in patterns)
            ]
            for key in sorted(extra, key=str):
                errors.append((path + [key], f"unknown field {key!r} (not in the CRD schema)"))
            continue
        message = error.message
        if error.validator == "anyOf" and error.schema is OBJECT_META:
            message = "metadata needs a name (or generateName)"
        errors.append((path, message))
    return errors


def unknown_keys(obj, allowed, path, what):
    if not isinstance(obj, dict):
        return []
    return [
        (path + [key], f"unknown field {key!r}: not a field of {what}")
        for key in obj
        if key not in allowed
    ]


def container_errors(pod_spec, path):
    errors = []
    if not isinstance(pod_spec, dict):
        return errors
    for field in ("containers", "initContainers"):
        containers = pod_spec.get(field)
        if not isinstance(containers, list):
            continue
        for i, container in enumerate(containers):
            errors += unknown_keys(
                container, K8S_CONTAINER_FIELDS, path + [field, i], "the Kubernetes Container type"
            )
    return errors


def annotation_errors(metadata, path):
    errors = []
    if not isinstance(metadata, dict) or not isinstance(metadata.get("annotations"), dict):
        return errors
    autoscaler_class = metadata["annotations"].get(AUTOSCALING_PREFIX + "class", KPA)
    for key, value in metadata["annotations"].items():
        if not isinstance(key, str) or not key.startswith(AUTOSCALING_PREFIX):
            continue
        where = path + ["annotations", key]
        name = key[len(AUTOSCALING_PREFIX) :]
        check = AUTOSCALING_ANNOTATIONS.get(name)
        if check is None:
            known = ", ".join(sorted(AUTOSCALING_ANNOTATIONS))
            errors.append((where, f"unknown autoscaling annotation {key!r} (known: {known})"))
        elif isinstance(value, str):
            problem = check(value, autoscaler_class) if check is _metric else check(value)
            if problem:
                errors.append((where, f"{value!r} is not {problem}"))
        # A non-string value is reported by the schema (annotations are maps of strings).
    return errors


def delivery_errors(delivery, path):
    errors = unknown_keys(delivery, DELIVERY_FIELDS, path, "Knative's delivery spec")
    if not isinstance(delivery, dict):
        return errors
    policy = delivery.get("backoffPolicy")
    if isinstance(policy, str) and policy not in ("linear", "exponential"):
        errors.append((path + ["backoffPolicy"], f"{policy!r} is not linear or exponential"))
    for field in ("backoffDelay", "timeout", "retryAfterMax"):
        value = delivery.get(field)
        if isinstance(value, str) and not ISO_DURATION.match(value):
            errors.append(
                (path + [field], f"{value!r} is not an ISO-8601 duration such as PT0.5S or PT1M")
            )
    retry = delivery.get("retry")
    if isinstance(retry, int) and not isinstance(retry, bool) and retry < 0:
        errors.append((path + ["retry"], f"{retry} is negative"))
    return errors


def kind_errors(group, kind, doc):
    """The checks beyond the CRD schema (see the module docs)."""
    errors = []
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    if group == "serving.knative.dev" and kind in ("Service", "Configuration"):
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        errors += annotation_errors(doc.get("metadata"), ["metadata"])
        errors += annotation_errors(template.get("metadata"), ["spec", "template", "metadata"])
        errors += container_errors(template.get("spec"), ["spec", "template", "spec"])
    elif group == "serving.knative.dev" and kind == "Revision":
        errors += annotation_errors(doc.get("metadata"), ["metadata"])
        errors += container_errors(spec, ["spec"])
    elif group == "eventing.knative.dev" and kind == "Trigger":
        errors += unknown_keys(spec, TRIGGER_SPEC_FIELDS, ["spec"], "Knative's Trigger spec")
        if "delivery" in spec:
            errors += delivery_errors(spec["delivery"], ["spec", "delivery"])
        if not spec.get("broker") and not spec.get("brokerRef"):
            errors.append((["spec"], "a Trigger needs spec.broker (or spec.brokerRef)"))
        subscriber = spec.get("subscriber")
        if not isinstance(subscriber, dict) or not (subscriber.get("ref") or subscriber.get("uri")):
            errors.append((["spec", "subscriber"], "a Trigger needs a subscriber ref or uri"))
    elif group == "eventing.knative.dev" and kind == "Broker":
        if "delivery" in spec:
            errors += delivery_errors(spec["delivery"], ["spec", "delivery"])
    return errors


def validate_document(crds, names, doc):
    """("ok" | "skip" | "fail", label, detail, [(path, message)])."""
    if not isinstance(doc, dict):
        return "fail", type(doc).__name__, "", [([], "a document must be a mapping (an object)")]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    label = f"{kind or '?'} {name or '?'} ({api_version or '?'})"
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        return "fail", label, "", [([], "a Kubernetes object needs apiVersion and kind (strings)")]
    group, _, version = api_version.rpartition("/")
    versions = crds.get((group, kind))
    if versions is None:
        return "skip", label, "no CRD schema", []
    validator = versions.get(version)
    if validator is None:
        served = ", ".join(sorted(versions))
        crd = names[(group, kind)]
        return "fail", label, "", [(["apiVersion"], f"{crd} has no version {version!r} (has: {served})")]
    errors = kind_errors(group, kind, doc)
    seen = {json_path(p) for p, _ in errors}
    for path, message in schema_errors(validator, doc):
        # An unknown container field is reported once, by the Container check.
        if json_path(path) not in seen:
            errors.append((path, message))
    errors.sort(key=lambda e: json_path(e[0]))
    if errors:
        return "fail", label, "", errors
    return "ok", label, f"{names[(group, kind)]} {version}", []


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    crd_dir, files = argv[1], argv[2:]
    try:
        crds, names = load_crds(crd_dir)
    except (OSError, Failure) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    counts = {"ok": 0, "skip": 0, "fail": 0}
    for file in files:
        shown = "<stdin>" if file == "-" else file
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as f:
                    text = f.read()
            docs = load_documents(text, shown)
        except (OSError, UnicodeDecodeError) as e:
            print(f"FAIL            {shown}: cannot read: {e}")
            failed += 1
            continue
        except Failure as e:
            print(f"FAIL            {e}")
            failed += 1
            continue
        if not docs:
            print(f"FAIL            {shown}: no YAML document")
            failed += 1
            continue
        for number, doc in enumerate(docs, start=1):
            status, label, detail, errors = validate_document(crds, names, doc)
            where = f"{shown}#{number}"
            counts[status] += 1
            if status == "ok":
                print(f"ok              {where} {label}: valid against {detail}")
            elif status == "skip":
                print(f"not validated   {where} {label}: {detail}")
            else:
                failed += 1
                plural = "error" if len(errors) == 1 else "errors"
                print(f"FAIL            {where} {label}: {len(errors)} {plural}")
                kind_name = " ".join(label.split(" ")[:2])
                for path, message in errors:
                    print(f"  {where} {kind_name}: {json_path(path)}: {message}")
    print(
        f"{counts['ok']} valid, {counts['skip']} not validated (no CRD schema), "
        f"{counts['fail']} invalid document(s); {failed} failure(s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
