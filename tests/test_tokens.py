"""The shipped cl100k_base tokenizer counts as OpenAI's does (the relay's prompt estimates,
budgets and local counting rest on it)."""

from relay import tokens


def test_counts_match_openais_published_tokenization():
    # OpenAI's cookbook ("How to count tokens with tiktoken"): cl100k_base
    assert tokens.encoding().encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert tokens.count_text("tiktoken is great!") == 6
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("") == 0


def test_special_token_text_in_a_prompt_is_counted_as_text():
    # a user who writes "<|endoftext|>" sends seven ordinary tokens, not one special token
    assert tokens.count_text("<|endoftext|>") == 7


def test_the_python_copy_of_the_table_is_not_kept():
    # the Rust encoder has its own; the Python dict (13 MB per worker) is only for pickling
    assert tokens.encoding()._mergeable_ranks == {}
    assert tokens.encoding().n_vocab == 100277
