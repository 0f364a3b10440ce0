"""A run's software environment: capture (packages, requirements.txt) and rebuild (virtualenv,
conda). Imports only the shared ground."""
