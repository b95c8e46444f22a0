"""Collection names, shared so that the bot writes where the API counts."""

USERS = "users"
MESSAGES = "messages"
CONTEXTS = "user_contexts"
