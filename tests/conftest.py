"""Shared pytest configuration for portal-ops."""

# Fixtures that start real servers on loopback (tests/fixtures/, docs/testing.md).
pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.nginx",
    "tests.fixtures.sshd",
    "tests.fixtures.s3",
    "tests.fixtures.smtp",
    "tests.fixtures.backup_env",
    "tests.fixtures.databases",
    "tests.fixtures.faulty_proxy",
    "tests.fixtures.pki",
    "tests.fixtures.portal_sites",
    "tests.fixtures.hostile",
    "tests.fixtures.monitoring_stack",
    "tests.fixtures.ansible_host",
]
