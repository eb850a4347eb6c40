# Lasso: one image for every region (see docs/deployment.md).
#   docker build -t lasso:0.1.0 .
#   docker run -p 4000:4000 -e LASSO_NODE_ID=us-east-1 lasso:0.1.0
# Mount your profiles over /etc/lasso/profiles (the shipped public and demo profiles are
# the default) and set LASSO_CLUSTER_URL=nats://... to join a cluster.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LASSO_PROFILES_DIR=/etc/lasso/profiles \
    LASSO_NODE_ID=local \
    PORT=4000
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels lasso \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin lasso
COPY config/profiles /etc/lasso/profiles
USER 10001:10001
EXPOSE 4000
# Ready when /api/health answers 200 (it makes no upstream calls).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '4000'), timeout=2)"]
# SIGTERM drains in-flight requests (up to 10 s) and exits 0; SIGHUP reloads the profiles.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lasso"]
CMD ["serve", "--host", "0.0.0.0"]
