# The two commands of the quick start: `make demo` and `make test`. Each runs setup first
# (idempotent; seconds when everything is already there).
CARGO ?= cargo

.PHONY: setup demo test lint bench bench-llm bench-unet bench-pipeline bench-load bench-cluster fixtures embedded-init fuzz-api

setup:
	@scripts/setup

demo: setup
	@$(CARGO) build --release --quiet
	@mkdir -p out
	@echo "rendering examples/poster-layout.json:"
	@target/release/letterpress render examples/poster-layout.json -o out/mask.png \
		--seg out/seg.png --preview out/preview.png --boxes out/boxes.json
	@target/release/letterpress render examples/poster-layout.json -o out/mask-inverse.png --inverse
	@echo "a poster from the embedded demo model (no --model-dir given; models/README.md):"
	@bash -c "time target/release/letterpress poster \"a navy gradient poster with the words 'Letterpress' and 'DEMO'\" \
		--seed 7 -o out/poster.png --save-mask out/poster-mask.png"

# The tests also need the real small LLM (llama-cpp-python; built once per machine) and
# nats-server for the scale-out tests.
test: setup
	@scripts/setup --llm --nats
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Regenerates diffusion/tests/fixtures bit for bit with diffusers/transformers (the oracle venv).
fixtures:
	@scripts/setup --oracle
	.venv/bin/python tools/make_fixtures.py
	.venv/bin/python tools/make_scheduler_fixtures.py
	.venv/bin/python tools/make_single_file_fixtures.py
	.venv/bin/python tools/make_pipeline_fixtures.py
	.venv/bin/python tools/make_train_fixtures.py

# Random-initialised folders of the embedded demo model's configs (models/README.md).
embedded-init:
	@scripts/setup --oracle
	.venv/bin/python tools/make_embedded_init.py --out models/embedded-init --seed 0

bench: setup
	@scripts/setup --bench
	$(CARGO) build --release --quiet
	target/release/letterpress bench render
	target/release/letterpress bench layout
	target/release/letterpress bench ocr
	scripts/bench-api

# Schemathesis against the running API's /openapi.json (tiny fixture model): ≥ 1,000 requests,
# zero 5xx, zero schema violations.
fuzz-api: setup
	@scripts/setup --bench
	$(CARGO) build --release --quiet
	scripts/fuzz-api

# The LLM planner with SmolLM2-135M-Instruct on llama-cpp-python, constraints on and off
# (docs/llm-planner.md, "Measured").
bench-llm: setup
	@scripts/setup --llm
	$(CARGO) build --release --quiet
	tools/bench_llm_planner.sh

# ControlNet + UNet forward (SD 1.5 configuration, random weights) against diffusers.
bench-unet:
	@scripts/setup --oracle
	$(CARGO) build --release --quiet
	target/release/letterpress bench unet

# A whole ControlNet generation (20 DDIM steps, 256x256, SD 1.5 configurations) against diffusers.
bench-pipeline:
	@scripts/setup --oracle
	$(CARGO) build --release --quiet
	target/release/letterpress bench pipeline

# A cold load of the SD 1.5 ControlNet pipeline (random weights, written once under target/)
# against diffusers' from_pretrained, each load in a fresh process.
bench-load:
	@scripts/setup --oracle
	$(CARGO) build --release --quiet
	target/release/letterpress bench load

# Jobs per second of a scaled-out service with 1 and 2 workers (`scaling: X`) and the queue's
# cost per job (docs/scaling-out.md).
bench-cluster:
	@scripts/setup --nats
	$(CARGO) build --release --quiet
	scripts/bench-cluster
