"""Deployment: the MLflow registry and promotion, plugin exports (.nam, AIDA-X) and orchestration."""
