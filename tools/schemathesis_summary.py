"""Summarises a schemathesis NDJSON report for `make fuzz-api`: requests sent, responses by
status class, check failures by check. Exits 1 unless there were at least MIN requests, no 5xx
and no failed check.

    python tools/schemathesis_summary.py events.ndjson MIN SCHEMATHESIS_EXIT_STATUS
"""

import collections
import json
import sys

path, minimum, st_status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
requests = 0
by_class = collections.Counter()
by_operation = collections.Counter()
failures = collections.Counter()
server_errors = []
with open(path) as f:
    for line in f:
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        for interaction in (recorder.get("interactions") or {}).values():
            response = interaction.get("response")
            if not response:
                continue
            requests += 1
            code = response["status_code"]
            by_class[f"{code // 100}xx"] += 1
            by_operation[recorder.get("label", "?")] += 1
            if code >= 500:
                server_errors.append(f'{interaction["request"]["method"]} {interaction["request"]["uri"]} -> {code}')
        for checks in (recorder.get("checks") or {}).values():
            for check in checks:
                if check["status"] == "failure":
                    failures[check["name"]] += 1

for label, n in sorted(by_operation.items()):
    print(f"  {n:6d}  {label}")
print("responses by class: " + ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())))
for e in server_errors[:10]:
    print("server error:", e)
for name, n in sorted(failures.items()):
    print(f"failed check {name}: {n}")
schema_violations = sum(failures[k] for k in ("response_schema_conformance", "status_code_conformance",
                                               "content_type_conformance", "response_headers_conformance"))
print(f"requests: {requests}")
print(f"server_errors: {len(server_errors)}")
print(f"schema_violations: {schema_violations}")
print(f"failed_checks: {sum(failures.values())}")
ok = requests >= minimum and not server_errors and not failures and st_status == 0
if requests < minimum:
    print(f"fuzz-api: only {requests} requests; at least {minimum} are required", file=sys.stderr)
sys.exit(0 if ok else 1)
