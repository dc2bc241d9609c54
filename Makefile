# The two commands of the README: `make demo` and `make test`. Both set up what they need.
.PHONY: setup demo test screenshot

setup:
	@scripts/setup.sh

# with a screen: the interactive demo; without one: render it under Xvfb into demo.png
demo: setup
	@if [ -n "$$DISPLAY" ]; then .venv/bin/napari-medcad demo; \
	else xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/napari-medcad demo --screenshot demo.png \
	  && echo "no display: the demo window was rendered to demo.png"; fi

test: setup
	xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest $(PYTEST_ARGS)

screenshot: setup
	xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/napari-medcad demo --screenshot docs/demo.png
	xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py
