"""System checks for how the portal is deployed (`manage.py check --deploy`).

An app only so that Django imports it at start-up (`apps.py`); each module here registers
the checks of one part of the deployment.
"""
