# audiotune on CPU: `docker build -t audiotune .`, then `docker run --rm audiotune train ...`.
# The entry point is the `audiotune` command; Vertex AI jobs written by `audiotune vertex` call it the same way.
FROM python:3.11-slim

# libsndfile decodes audio (soundfile); libgomp runs faiss and torch's OpenMP threads
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/audiotune
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# the CPU build of torch first, so nothing pulls a CUDA build; then the package at its tested versions
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -c constraints.txt .

ENV AUDIOTUNE_CACHE=/var/cache/audiotune
ENTRYPOINT ["audiotune"]
CMD ["--help"]
