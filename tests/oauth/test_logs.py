from app.core.logging import redact


def test_oauth_tokens_and_codes_never_reach_a_log_line() -> None:
    line = "token request code=ggc_AbCdEf123456 refresh_token=ggr_Zz-9_876543210 gga_qwertyuiop"
    assert redact(line) == (
        "token request code=ggc_[redacted] refresh_token=ggr_[redacted] gga_[redacted]"
    )
