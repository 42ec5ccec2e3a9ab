"""The Flask application factory, shared by `hana-rules web`, `serve` and the tests."""

from __future__ import annotations

import atexit

import redis
from flask import Flask

from engine.config import Settings, load_settings, with_generated_tokens
from engine.errors import ConfigError
from engine.rules.ruleset import RuleSet
from engine.runtime.action_state import ActionStore
from engine.runtime.connection import receiver_client
from engine.runtime.events import EventStore
from engine.runtime.intake import MAX_BODY_BYTES, Intake
from engine.runtime.journal import Journal, JournalDrainer
from engine.runtime.loading import RuleRegistry
from engine.web import admin, errors, health, hooks
from engine.web.console import pages as console


def create_app(
    settings: Settings | None = None,
    *,
    connection: redis.Redis | None = None,
    drain_journal: bool = True,
    rule_set: RuleSet | None = None,
) -> Flask:
    """Build the app; call it once per process (after a fork), never before.

    The rules are the running set (`RuleRegistry.boot`), never whatever the files on disk
    say at this moment: a web process restarting while a file is half-edited still boots.
    """
    settings = with_generated_tokens(settings or load_settings())
    if connection is None:
        if not settings.redis_target:
            raise ConfigError("no Redis: `hana-rules web` needs REDIS_URL or redis_sentinel (or `hana-rules serve`)")
        connection = receiver_client(settings.redis_target)
    registry = RuleRegistry(connection, settings, rule_set) if rule_set else RuleRegistry.boot(connection, settings)
    store = EventStore(connection)
    journal = Journal(settings.data_dir)

    app = Flask("hana_rules")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1  # see hooks.receive
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["hana_rules.settings"] = settings
    app.extensions["hana_rules.redis"] = connection
    app.extensions["hana_rules.registry"] = registry
    app.extensions["hana_rules.journal"] = journal
    app.extensions["hana_rules.intake"] = Intake(settings, store, journal)
    app.extensions["hana_rules.actions"] = ActionStore(connection)
    app.register_blueprint(hooks.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(admin.blueprint)
    console.install(app, settings)
    errors.install(app)

    if drain_journal:
        drainer = JournalDrainer(journal, app.extensions["hana_rules.intake"].feed)
        drainer.start()
        app.extensions["hana_rules.drainer"] = drainer
        atexit.register(drainer.stop)
    return app
