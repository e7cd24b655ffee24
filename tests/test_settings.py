import pytest

from streamrec.settings import SettingsError, load_settings


def test_defaults_load():
    s = load_settings(env={})
    assert s.topics.event_topics() == {
        "browse": "streamrec.browse",
        "click": "streamrec.click",
        "purchase": "streamrec.purchase",
    }
    assert s.recs.k == 20


def test_env_overrides_and_types(tmp_path):
    f = tmp_path / "over.toml"
    f.write_text("[recs]\nk = 5\n[app]\nweb_enabled = false\n")
    s = load_settings(
        f, env={"STREAMREC_RECS_K": "7", "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2"}
    )
    assert s.recs.k == 7  # environment wins over the file
    assert s.app.web_enabled is False
    assert s.kafka_client_config()["bootstrap_servers"] == ["a:1", "b:2"]


def test_unknown_and_mistyped_settings_refused(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[recs]\nkk = 5\n")
    with pytest.raises(SettingsError, match=r"recs\.kk"):
        load_settings(f, env={})
    with pytest.raises(SettingsError, match=r"recs\.k"):
        load_settings(env={"STREAMREC_RECS_K": "many"})


def test_sasl_ssl_passthrough():
    s = load_settings(
        env={
            "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMREC_KAFKA_SASL_USERNAME": "svc",
            "STREAMREC_KAFKA_SASL_PASSWORD": "pw",
            "STREAMREC_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    cfg = s.kafka_client_config()
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "svc"
    assert cfg["ssl_cafile"] == "/etc/ca.pem"


def test_unknown_environment_variable_refused():
    with pytest.raises(SettingsError, match="STREAMREC_RECS_KK"):
        load_settings(env={"STREAMREC_RECS_KK": "5"})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[kafka]\nbootstrap_servers = ["a:1", "b:2"]\n', r"kafka\.bootstrap_servers"),
        ("[recs]\nbatch_wait_ms = true\n", r"recs\.batch_wait_ms"),
        ("[features]\npopularity_half_life_s = 0\n", r"must be > 0"),
        ("[recs]\nk = -1\n", r"recs\.k"),
        ("[features]\nwindows_s = [3600, 0]\n", r"features\.windows_s"),
    ],
)
def test_mistyped_or_out_of_range_values_refused(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(SettingsError, match=match):
        load_settings(f, env={})


def test_to_env_round_trips():
    s = load_settings(env={"STREAMREC_RECS_K": "9", "STREAMREC_FEATURES_WINDOWS_S": "60,600"})
    assert load_settings(env=s.to_env()) == s
