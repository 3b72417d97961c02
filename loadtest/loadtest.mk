# Load tests, soak, capacity report and benchmarks (included by the Makefile).
# Each target starts its own Triton server on free loopback ports on
# model_repository/, stops it at the end, and writes under loadtest/reports/.
#
#   make loadtest                      Locust, headless: fails on any failed request or p95 > LOCUST_P95_MS
#                [LOCUST_REPLICAS=2]   against several servers: figures per replica (its own counters) and in total
#   make soak [SOAK_SECONDS=600]       Locust for SOAK_SECONDS; fails on a failed request or RSS growth >= 10 %
#   make capacity                      throughput and p50/p95 vs concurrency, ensemble vs network alone
#   make bench                         served vs raw ONNX Runtime, ORT vs PyTorch, OpenVINO vs ORT, server memory
#   make sweep [SWEEP_SIZE=136x240]    instances x threads, batching and precision ÷ f32, by perf_analyzer

.PHONY: loadtest soak capacity bench sweep

LOADTEST_DIR := loadtest
LOADTEST_REPORTS ?= $(LOADTEST_DIR)/reports
LOADTEST_SCALE ?= 4

# Locust (loadtest/locustfile.py through loadtest/run_locust.py). Short CI-friendly defaults.
LOCUST_USERS ?= 2
LOCUST_SPAWN_RATE ?= 2
LOCUST_RUN_TIME ?= 30
LOCUST_P95_MS ?= 4000
LOCUST_SIZES ?= 32x56,48x80,64x112
LOCUST_TAGS ?=
LOCUST_USER_CLASSES ?=
LOCUST_STREAM_FRAMES ?= 8
LOCUST_STREAM_WINDOW ?= 4
LOCUST_REPLICAS ?= 1

SOAK_SECONDS ?= 600
SOAK_USERS ?= $(LOCUST_USERS)
SOAK_MAX_RSS_GROWTH ?= 0.10

CAPACITY_SIZE ?= 68x120
CAPACITY_CONCURRENCY ?= 1,2,4,8
CAPACITY_SECONDS ?= 20

BENCH_SIZES ?= 68x120,136x240,270x480
BENCH_FRAMES ?= 4
BENCH_ROUNDS ?= 3

LOCUST_ARGS = --repository model_repository --reports-dir $(LOADTEST_REPORTS) --scale $(LOADTEST_SCALE) \
	--spawn-rate $(LOCUST_SPAWN_RATE) --p95-ms $(LOCUST_P95_MS) --sizes $(LOCUST_SIZES) \
	--stream-frames $(LOCUST_STREAM_FRAMES) --stream-window $(LOCUST_STREAM_WINDOW) --replicas $(LOCUST_REPLICAS) \
	$(if $(LOCUST_TAGS),--tags $(LOCUST_TAGS)) $(if $(LOCUST_USER_CLASSES),--user-classes $(LOCUST_USER_CLASSES))

loadtest: repository
	$(PY) $(LOADTEST_DIR)/run_locust.py $(LOCUST_ARGS) --users $(LOCUST_USERS) --run-time $(LOCUST_RUN_TIME)

soak: repository
	$(PY) $(LOADTEST_DIR)/run_locust.py $(LOCUST_ARGS) --users $(SOAK_USERS) --run-time $(SOAK_SECONDS) \
		--soak --max-rss-growth $(SOAK_MAX_RSS_GROWTH)

capacity: repository
	$(PY) $(LOADTEST_DIR)/capacity.py --repository model_repository --reports-dir $(LOADTEST_REPORTS) \
		--scale $(LOADTEST_SCALE) --size $(CAPACITY_SIZE) --concurrency $(CAPACITY_CONCURRENCY) \
		--seconds $(CAPACITY_SECONDS)

bench: repository
	$(PY) $(LOADTEST_DIR)/bench.py --repository model_repository --reports-dir $(LOADTEST_REPORTS) \
		--scale $(LOADTEST_SCALE) --sizes $(BENCH_SIZES) --frames $(BENCH_FRAMES) --rounds $(BENCH_ROUNDS)

# Instances x threads and batching of the CPU network, measured with perf_analyzer (loadtest/sweep.py).
SWEEP_SIZE ?= 136x240
sweep: repository
	$(PY) $(LOADTEST_DIR)/sweep.py --repository model_repository --reports-dir $(LOADTEST_REPORTS) \
		--scale $(LOADTEST_SCALE) --size $(SWEEP_SIZE)
