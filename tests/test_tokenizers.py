from transformers import AutoTokenizer, BertTokenizer, XLNetTokenizer


def test_bert_wordpiece_conventions(prepared, tiny_params):
    tok = AutoTokenizer.from_pretrained(prepared.tokenizer("bert"))
    assert isinstance(tok, BertTokenizer) and tok.is_fast
    assert len(tok) == tiny_params.tokenizer.vocab_size
    enc = tok(["Great COFFEE", "bad"], ["buy again", "no"], padding=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][1])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[PAD]"  # pads right
    first = tok.convert_ids_to_tokens(enc["input_ids"][0])
    sep = first.index("[SEP]")
    assert enc["token_type_ids"][0][: sep + 1] == [0] * (sep + 1)
    assert set(enc["token_type_ids"][0][sep + 1:]) == {1}  # segment B, through its [SEP]
    assert tok("Great")["input_ids"] == tok("great")["input_ids"]  # uncased
    assert all(t.startswith("##") for t in tok.tokenize("unbelievablyxyz")[1:])  # WordPiece continuation


def test_xlnet_unigram_conventions(prepared, tiny_params):
    tok = AutoTokenizer.from_pretrained(prepared.tokenizer("xlnet"))
    assert isinstance(tok, XLNetTokenizer) and tok.is_fast
    assert len(tok) == tiny_params.tokenizer.vocab_size
    assert tok.padding_side == "left"
    enc = tok(["great coffee, will buy again", "bad"], ["second", "x"], padding=True)
    long_tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    short = enc["input_ids"][1]
    assert long_tokens[-2:] == ["<sep>", "<cls>"]  # <sep><cls> at the END, not [CLS] first
    assert tok.convert_ids_to_tokens(short)[0] == "<pad>" and enc["attention_mask"][1][0] == 0  # pads LEFT
    types = enc["token_type_ids"]
    assert types[0][-1] == 2 and types[0][0] == 0 and 1 in types[0]  # A=0, B=1, <cls>=2
    # transformers 5's XLNetTokenizer pads segment ids with 0 (the slow tokenizer used 3); padding is masked
    # out of attention, so the choice does not reach the logits
    assert types[1][0] in (0, 3)
    assert any(t.startswith("▁") for t in long_tokens)  # SentencePiece-style word boundary marker
