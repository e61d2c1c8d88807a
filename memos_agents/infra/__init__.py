"""Infrastructure shared by the memory OS: governance helpers such as PII redaction."""
