"""The seed's desk examples (desk-generate-api-spec.md) as it writes them, and its answers."""

# The seed's request examples, as it writes them (its markdown indentation removed).
PHOTO = '{\n  "initial_image_url": "https://bucket.s3.amazonaws.com/images/12.png",\n}'
POLLING = '{\n  "prompt": "minimal wooden desk setup",\n  "negative_prompt": "people, cartoon, blurry"\n}'
WEBHOOK = '{\n  "prompt": "dark-themed desk with LED strip",\n  "webhook_url": "https://myapp.com/notify"\n}'
PHOTO_URL, WEBHOOK_URL = "https://bucket.s3.amazonaws.com/images/12.png", "https://myapp.com/notify"

# Its answers: the submit, the result (and the webhook) with each item's offers at the top level, errors.
ACCEPTED_KEYS = {"task_id", "status"}
RESULT_KEYS = {"status", "initial_image_url", "processed_image_url"}
OFFER_KEYS = {"title", "price", "mall", "category3", "category4", "link", "image"}
BAD_REQUEST = {"detail": "Prompt must not be empty."}
INVALID = {"error_code": "INVALID_INPUT", "message": "Guidance scale cannot be negative."}
# Replayed during test_webhooks_s3_naver.py's S3 outage (the suite stops S3 once).
UPLOAD_FAILED = {"error_code": "S3_UPLOAD_FAILED", "message": "Failed to upload image to S3."}
