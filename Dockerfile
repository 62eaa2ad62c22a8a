# tiergate: the same install steps as the Makefile (`make install`), in a slim image.
#   docker build -t tiergate:0.1.0 .
#   docker run --rm -p 8000:8000 -e TIERGATE_API_KEYS="$(cat keys.yaml)" \
#     -v tiergate-cache:/home/tiergate/.tiergate-cache tiergate:0.1.0
# It serves on all interfaces with API keys on (README.md "API keys"): `tiergate serve`
# refuses a non-loopback host with keys off unless serving.http.allow_unauthenticated_remote.
# For a CPU-only torch wheel (a few hundred MB instead of the CUDA build), pass
# --build-arg PIP_EXTRA_INDEX_URL=<PyTorch's CPU wheel index>.
FROM python:3.11-slim-bookworm

# Debian's Fashion-MNIST: the embedded default's data (Makefile: system-deps; its
# other package, prometheus, is only for the test suite)
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 tiergate
WORKDIR /home/tiergate/app
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

# Dependencies first, so source edits do not reinstall them (Makefile: $(STAMP))
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p tiergate \
 && echo '__version__ = "0.0.0"' > tiergate/__init__.py \
 && pip install -c constraints.txt . \
 && pip uninstall -y tiergate

COPY tiergate tiergate
RUN pip install --no-deps -c constraints.txt . && chown -R tiergate /home/tiergate

USER tiergate
ENV TIERGATE_CACHE_DIR=/home/tiergate/.tiergate-cache
EXPOSE 8000 8080
# the first start builds the variants (minutes); /readyz answers 200 once they are served
HEALTHCHECK --interval=15s --timeout=3s --start-period=600s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
ENTRYPOINT ["tiergate"]
CMD ["serve", "--host", "0.0.0.0", "--set", "serving.auth.enabled=true"]
