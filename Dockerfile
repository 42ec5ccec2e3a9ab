# hana-rules: one image for the receiver (`web`) and the workers (`worker`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hana
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY rules ./rules
# Named volumes start with the image's ownership of their mount point: the journal, the metrics folder.
RUN mkdir -p /app/var /app/metrics && chown hana:hana /app/var /app/metrics
USER hana
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
CMD ["hana-rules", "web", "--host", "0.0.0.0", "--port", "8080"]
