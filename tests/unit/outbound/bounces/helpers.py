"""Values shared by the bounce tests."""

KEY = b"k" * 32
ORIGINAL = (
    b"From: Support <support@example.test>\r\n"
    b"To: kunde@nirgendwo.example\r\n"
    b"Subject: Ihre Anfrage\r\n"
    b"Message-ID: <orig-1@example.test>\r\n"
    b"\r\n"
    b"Hallo.\r\n"
)
