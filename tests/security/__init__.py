"""Adversarial tests: what an attacker (another local user, another tenant's token, a viewer,
a crafted definition) tries, and jobsys refuses."""
