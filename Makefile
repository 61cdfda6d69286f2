# reid_tf — every entry point. The first use of any target creates .venv and installs the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA_DIR ?= data
DATASET  ?=
WORKDIR  ?= runs/demo
TRIALS   ?=
SMOKE    ?=
PYTEST_FLAGS ?=
DEMO_FLAGS ?=
PROFILE_FLAGS ?=

.PHONY: demo test test-slow check-results bench bench-data bench-rank bench-large-gallery profile-train tensorboard table5 reproduce-table2 reproduce-table3 reproduce-table4 reproduce-market1501 clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job: train and evaluate, on the built-in synthetic dataset unless DATASET names a prepared
# one (e.g. make demo DATASET=viper; not prepared: an error giving the command that prepares it).
# It ends on the report, the TensorBoard command and a ranking command. Run again on a WORKDIR whose run
# is finished: one line saying so, status 0 (another run: WORKDIR=runs/demo2); on an unfinished one:
# continue it with DEMO_FLAGS=--resume. REID_TF_VERBOSE=1 shows TensorFlow's own lines (reid_tf.cli).
demo: $(STAMP)
	$(PY) -m reid_tf.train --workdir=$(WORKDIR) --data_dir=$(DATA_DIR) \
	  $(if $(DATASET),--dataset=$(DATASET)) $(DEMO_FLAGS)

# The default test run, what CI runs (< 10 minutes on 2 CPU cores): resume exactness, the NaN guard,
# replica division, one reproduce path and every numerical check; test-slow runs the tests marked
# slow (docs/DESIGN.md "Test tiers" says what each tier guards). TEST_WORKERS pytest-xdist processes:
# much of a test's time is single-threaded Python (tracing a training step), so two use both cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_FLAGS) tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m slow $(PYTEST_FLAGS) tests

# Every kept network (networks/<name>/) evaluated on its test split, against the figures of its card:
# one line per differing figure and exit status 1 (CUHK01 is prepared on the fly from shared/data;
# CHECK_FLAGS, e.g. --protocols=single_shot or --data_dir=data).
CHECK_FLAGS ?=
check-results: $(STAMP)
	$(PY) -m experiments.check_results $(CHECK_FLAGS)

table5: $(STAMP)
	$(PY) -m experiments.table5

bench: $(STAMP)
	$(PY) -m benchmarks.bench_scoring

bench-data: $(STAMP)
	$(PY) -m benchmarks.bench_data

# Ranking one query against 1,000 / 10,000 synthetic gallery images, exhaustive vs shortlist
# (MODEL=runs/x/model.keras: a trained model; docs/RESULTS.md "Ranking a gallery").
MODEL ?= $(WORKDIR)/model.keras
bench-rank: $(STAMP)
	$(PY) -m benchmarks.bench_rank --model=$(MODEL)

# A Market-1501-sized evaluation (3,368 × 15,913 synthetic images) in two stages at K = 50 / 100 / 200:
# time per stage (docs/RESULTS.md "Large galleries" has the figures and how long it takes). GALLERY_FLAGS, e.g.
# --mode=exhaustive --checkpoint=runs/x/model.keras --cuhk01=data/cuhk01: shortlist against exhaustive.
GALLERY_FLAGS ?=
bench-large-gallery: $(STAMP)
	$(PY) -m benchmarks.bench_large_gallery $(GALLERY_FLAGS)

# Where a training step's time goes, per block and op type (PROFILE_FLAGS, e.g. --preset=l234).
profile-train: $(STAMP)
	$(PY) -m benchmarks.profile_train $(PROFILE_FLAGS)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir runs --bind_all

reproduce-table2 reproduce-table3 reproduce-table4: $(STAMP)
	$(PY) -m experiments.reproduce --table=$(subst reproduce-table,,$@) --data_dir=$(DATA_DIR) \
	  $(if $(TRIALS),--trials=$(TRIALS)) $(if $(SMOKE),--smoke) $(if $(FROM_RESULTS),--from_results=results) \
	  $(if $(RECIPE),--recipe=$(RECIPE)) $(if $(PAIRING),--pairing=$(PAIRING))

# Ours-(L2, L3) on a prepared Market-1501 with the standard protocol (SMOKE=1: 2 steps, K = 5).
reproduce-market1501: $(STAMP)
	$(PY) -m experiments.market1501 --data_dir=$(DATA_DIR) $(if $(SMOKE),--smoke)

# Build artefacts only. runs/ holds every trained model and is never deleted by make: remove a run
# yourself (rm -rf runs/NAME) when you mean to.
clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
	find reid_tf data_tools experiments benchmarks tests -name __pycache__ -type d -prune -exec rm -rf {} +
	find results -name '.*.tmp*' -delete 2>/dev/null || true
