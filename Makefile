# The two commands a fresh machine needs (see README):
#   make demo   installs, then fine-tunes a generated tiny model locally end to end
#   make test   installs, then runs the whole test suite (what .ci/run calls)
PYTHON ?= python3
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

# From npm into ./node_modules (git-ignored): the CDK CLI (`npx cdk synth` from the repository
# root finds it there) and JSONata, which tests/infra uses to run the workflow's expressions.
NPM_TOOLS := aws-cdk@2.1148.1 jsonata@2.2.2

.PHONY: install demo test lint bench

install:
	# The CPU build of torch first: a later range that it satisfies installs nothing more.
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[all]"
	# npm only when a pinned tool is missing or at another version (a no-op otherwise).
	@node -e 'for (const t of process.argv.slice(1)) { const i = t.lastIndexOf("@"); if (require("./node_modules/" + t.slice(0, i) + "/package.json").version !== t.slice(i + 1)) process.exit(1) }' $(NPM_TOOLS) 2>/dev/null \
	  || npm install --prefix . --no-save --no-package-lock --no-audit --no-fund --loglevel=error $(NPM_TOOLS)

demo: install
	bash examples/demo.sh

test: install
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check sdk training_image infra tests bench examples

bench:
	for f in bench/*.py; do $(PYTHON) $$f || exit 1; done
