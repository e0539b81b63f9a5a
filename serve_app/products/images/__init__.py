"""Plain images for code written against OpenAI's images API (`/v1/images/generations`, `/edits`)."""
