# Small, and installed through the same script as the README, so the two cannot drift apart.
FROM python:3.11-slim-bookworm
RUN useradd --system --create-home --home-dir /var/lib/photo-gateway gateway
WORKDIR /opt/photo-gateway
COPY . .
# scripts/install.sh installs the Debian packages (dcmtk, dicom3tools, jpegtran, orthanc for the
# demo) and the package into a virtual environment.
RUN PHOTO_GATEWAY_VENV=/opt/venv bash scripts/install.sh && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH
USER gateway
EXPOSE 11112 8080
ENTRYPOINT ["photo-gateway"]
CMD ["serve", "--config", "/etc/photo-gateway/gateway.yaml"]
