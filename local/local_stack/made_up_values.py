"""Every secret-looking value this repository contains, in one place: all made up, for local use only.

Nothing here is accepted by Moment or AWS. The secret scan in the tests allows exactly these.
"""

# base64 of b"moment-sync-local-demo-signing-key!": a Standard Webhooks secret for the local stack.
LOCAL_WEBHOOK_SECRET = "whsec_bW9tZW50LXN5bmMtbG9jYWwtZGVtby1zaWduaW5nLWtleSE="
# base64 of b"forged-by-somebody-else": what the demo and soak sign forged webhooks with.
FORGER_WEBHOOK_SECRET = "whsec_Zm9yZ2VkLWJ5LXNvbWVib2R5LWVsc2U="
# A made-up Moment test key (the sandbox accepts it; Moment does not know it).
LOCAL_MOMENT_API_KEY = "sk_test_local_made_up_not_a_real_key_0000"
# Other made-up Moment keys, for tests that need a key the sandbox must refuse.
OTHER_MADE_UP_API_KEYS = ("sk_test_somebody_elses_key", "sk_test_another_made_up_key")

# Published test vectors (not secrets of anyone's): the Standard Webhooks reference vector, which is
# Moment's own example signature, and a key made up for a vector computed by hand with openssl.
PUBLISHED_TEST_VECTOR_SECRETS = (
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_aGFuZC1jb21wdXRlZC12ZWN0b3Ita2V5",
)

# Credentials moto accepts; AWS does not.
LOCAL_AWS_ACCESS_KEY_ID = "testing"
LOCAL_AWS_SECRET_ACCESS_KEY = "testing"
