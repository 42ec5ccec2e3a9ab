"""A rule file's text shown in the console: no credential, whether from the environment or written in."""

from engine.redaction import redact_rule_text


def test_defaults_written_values_and_known_secrets_are_masked() -> None:
    text = (
        '      - slack: {webhook_url: "${HOOK_URL:-https://hooks.slack.com/services/T1/B1/XYZ}", text: hi}\n'
        "      - telegram: {bot_token: 123:abc, chat_id: 5}\n"
        '      - webhook: {url: "https://x/{{ lead.id }}", headers: {Authorization: "Bearer sss"}}\n'
        "        # the token is s3cr3t-from-env\n"
    )
    shown = redact_rule_text(text, {"s3cr3t-from-env"})
    assert "XYZ" not in shown and "123:abc" not in shown and "Bearer sss" not in shown
    assert "s3cr3t-from-env" not in shown
    assert '${HOOK_URL:-***}' in shown and "chat_id: 5" in shown and 'url: "https://x/{{ lead.id }}"' in shown
