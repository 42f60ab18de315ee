""".env.example names the cron path's settings too (they live in legacy_cron/settings.py)."""

from legacy_cron.settings import CronSettings
from tests.test_readme_gates import env_example_names


def test_env_example_documents_the_cron_settings():
    named = env_example_names()
    wanted = set(CronSettings.model_fields)
    assert not wanted - named, f".env.example lacks {sorted(wanted - named)}"
