# tipline's container image. Build: docker build -t tipline .
# Run it with PostgreSQL: deploy/compose.yaml (README, "Operations"). No secret is in the
# image: the token, pepper and keys come from the environment or the mounted config.toml.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 tipline \
    && useradd --system --uid 10001 --gid tipline --home-dir /var/lib/tipline --create-home \
       --shell /usr/sbin/nologin tipline \
    && install -d -o tipline -g tipline -m 0700 /var/lib/tipline-keys \
    && chmod 0700 /var/lib/tipline

WORKDIR /opt/tipline
COPY pyproject.toml README.md config.example.toml ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY templates ./templates
# Installed from pyproject.toml, in place: the templates and migrations stay beside the code.
RUN pip install --editable . && tipline --help > /dev/null

USER tipline
WORKDIR /var/lib/tipline
# The data (SQLite, if used) in /var/lib/tipline; the update journal's rotating keys in a
# volume of their own, so that a copy or backup of the data volume does not carry them.
ENV TIPLINE_CONFIG=/etc/tipline/config.toml \
    TIPLINE_JOURNAL_KEY_DIR=/var/lib/tipline-keys
VOLUME ["/var/lib/tipline", "/var/lib/tipline-keys"]
ENTRYPOINT ["tipline"]
CMD ["run"]
