"""Both scoring modes against a hand computation from raw logits, the shared-prefix path against
the naive one, prompt assembly and shot dropping (tiny random LLaMA, real LLaMA-2 tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eval_helpers import CMMLU, tiny_model, tokenizer, write_csv

from langgraft.errors import UserError
from langgraft.eval import McOptions, evaluate_mc, load_task
from langgraft.eval.scorer import Request, letter_variants, score_naive, score_shared_prefix

ZH_HEADER = "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
EN_HEADER = "The following are multiple choice questions (with answers) about astronomy.\n\n"


@pytest.fixture(scope="module")
def zh_task(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cmmlu")
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    dev = [
        ["0", "牛吃什么", "草", "肉", "鱼", "石头", "A"],
        ["1", "鸭会游泳吗", "不会", "会", "偶尔", "不知道", "B"],
    ]
    test = [
        ["0", "哪种作物耐旱", "水稻", "高粱", "莲藕", "茭白", "B"],
        ["1", "小麦属于", "豆科", "禾本科", "茄科", "菊科", "B"],
    ]
    write_csv(root / "dev" / "agronomy.csv", dev, header)
    write_csv(root / "test" / "agronomy.csv", test, header)
    return load_task("cmmlu", root)


@pytest.fixture(scope="module")
def en_task(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mmlu")
    dev = [["Which planet is largest?", "Mars", "Jupiter", "Venus", "Earth", "B"]]
    test = [
        ["The Sun is a", "planet", "moon", "star", "comet", "C"],
        ["Light year measures", "time", "distance", "mass", "speed", "B"],
    ]
    write_csv(root / "dev" / "astronomy_dev.csv", dev)
    write_csv(root / "test" / "astronomy_test.csv", test)
    return load_task("mmlu", root)


def _last_logprobs(text: str) -> torch.Tensor:
    ids = tokenizer()(text)["input_ids"]
    assert ids[0] == 1  # BOS
    with torch.no_grad():
        logits = tiny_model()(torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)


def test_letter_variants_cover_space_and_colon_forms() -> None:
    v = letter_variants(tokenizer(), "ABCD", ["Answer: ", "答案："])
    tok = tokenizer()
    for L in "ABCD":
        assert set(v[L]) == {tok.convert_tokens_to_ids(L), tok.convert_tokens_to_ids("▁" + L)}
    assert tok("Answer: A", add_special_tokens=False)["input_ids"][-1] in v["A"]
    assert tok("答案：A", add_special_tokens=False)["input_ids"][-1] in v["A"]


def test_first_token_matches_hand_computation(zh_task) -> None:
    result = evaluate_mc(tiny_model(), tokenizer(), zh_task, McOptions(shots=2, mode="first-token"))
    shots = "牛吃什么\nA. 草\nB. 肉\nC. 鱼\nD. 石头\n答案：A\n\n鸭会游泳吗\nA. 不会\nB. 会\nC. 偶尔\nD. 不知道\n答案：B\n\n"
    tok = tokenizer()
    for rec, q in zip(
        result["records"],
        [
            "哪种作物耐旱\nA. 水稻\nB. 高粱\nC. 莲藕\nD. 茭白",
            "小麦属于\nA. 豆科\nB. 禾本科\nC. 茄科\nD. 菊科",
        ],
        strict=True,
    ):
        logp = _last_logprobs(ZH_HEADER + shots + q + "\n答案：")
        hand = [
            max(logp[tok.convert_tokens_to_ids(p)] for p in (L, "▁" + L)).item() for L in "ABCD"
        ]
        assert rec["first_token"]["scores"] == pytest.approx(hand, abs=1e-5)
        assert rec["first_token"]["pred"] == "ABCD"[max(range(4), key=hand.__getitem__)]
        assert rec["shots"] == 2 and rec["answer"] == "B"
    assert result["overall"]["first_token_acc"]["n"] == 2
    assert result["letter_variants"]["A"][0]["piece"] in ("▁A", "A")


def test_loglik_letter_and_text_match_hand_computation(en_task) -> None:
    tok, model = tokenizer(), tiny_model()
    shot = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    prompt = EN_HEADER + shot + " B\n\nThe Sun is a\nA. planet\nB. moon\nC. star\nD. comet\nAnswer:"
    letters = evaluate_mc(model, tok, en_task, McOptions(mode="both", limit=1))
    logp = _last_logprobs(prompt)
    hand = [logp[tok.convert_tokens_to_ids("▁" + L)].item() for L in "ABCD"]
    assert letters["records"][0]["loglik"]["scores"] == pytest.approx(hand, abs=1e-5)
    assert letters["metrics"] == ["first_token_acc", "loglik_acc"]

    text = evaluate_mc(model, tok, en_task, McOptions(mode="loglik", continuation="text", limit=1))
    prompt_t = prompt.replace("Earth\nAnswer: B", "Earth\nAnswer: Jupiter")
    ctx = tok(prompt_t)["input_ids"]
    hand, norm = [], []
    for option in ("planet", "moon", "star", "comet"):
        full = tok(prompt_t + " " + option)["input_ids"]
        assert full[: len(ctx)] == ctx
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        total = sum(lp[i - 1, full[i]].item() for i in range(len(ctx), len(full)))
        hand.append(total)
        norm.append(total / len(option))
    rec = text["records"][0]
    assert rec["loglik"]["scores"] == pytest.approx(hand, abs=1e-4)
    assert rec["loglik"]["pred_norm"] == "ABCD"[max(range(4), key=norm.__getitem__)]
    assert text["metrics"] == ["loglik_acc", "loglik_acc_norm"]


def test_shared_prefix_equals_naive_on_real_cmmlu() -> None:
    task = load_task("cmmlu", CMMLU)
    opts = dict(mode="both", limit=6, subjects=["agronomy", "ancient_chinese"], batch_size=4)
    shared = evaluate_mc(tiny_model(), tokenizer(), task, McOptions(**opts, shared_prefix=True))
    naive = evaluate_mc(tiny_model(), tokenizer(), task, McOptions(**opts, shared_prefix=False))
    assert len(shared["records"]) == 12
    for a, b in zip(shared["records"], naive["records"], strict=True):
        assert a["tokens"] == b["tokens"] and a["shots"] == b["shots"] == 5
        for key in ("first_token", "loglik"):
            assert a[key]["pred"] == b[key]["pred"]
            assert a[key]["scores"] == pytest.approx(b[key]["scores"], abs=1e-4)
    assert shared["overall"]["first_token_acc"] == naive["overall"]["first_token_acc"]


def test_score_paths_agree_on_multi_read_requests() -> None:
    g = torch.Generator().manual_seed(1)
    prefix = [1, *torch.randint(3, 30000, (40,), generator=g).tolist()]
    reqs = []
    for n in (3, 9, 1, 6, 5):
        ids = prefix + torch.randint(3, 30000, (n,), generator=g).tolist()
        reads = [(len(ids) - 1, [5, 6, 7])] + ([(len(ids) - 2, [8])] if n > 1 else [])
        reqs.append(Request(ids, reads))
    a = score_shared_prefix(tiny_model(), reqs, batch_size=2)
    b = score_naive(tiny_model(), reqs)
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb, strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


def test_shots_dropped_before_question_is_cut(tmp_path: Path) -> None:
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    dev = [[str(i), "短题" * 5, "甲", "乙", "丙", "丁", "A"] for i in range(5)]
    test = [
        ["0", "短", "甲", "乙", "丙", "丁", "A"],
        ["1", "长" * 250, "甲", "乙", "丙", "丁", "B"],
        ["2", "巨" * 1200, "甲", "乙", "丙", "丁", "C"],
    ]
    write_csv(tmp_path / "dev" / "agronomy.csv", dev, header)
    write_csv(tmp_path / "test" / "agronomy.csv", test, header)
    task = load_task("cmmlu", tmp_path)
    # By hand: the most shots whose prompt leaves one token for the answer within 512.
    shot = "短题" * 5 + "\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：A\n\n"
    head = "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
    body = "长" * 250 + "\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案："
    expected_long_shots = max(
        k for k in range(6) if len(tokenizer()(head + shot * k + body)["input_ids"]) <= 511
    )
    assert 0 < expected_long_shots < 5  # the case exercises dropping, not all-or-nothing
    for shared in (True, False):
        r = evaluate_mc(
            tiny_model(), tokenizer(), task, McOptions(max_length=512, shared_prefix=shared)
        )
        short, long_, huge = r["records"]
        assert short["shots"] == 5 and not short["truncated"] and short["tokens"] <= 511
        assert long_["shots"] == expected_long_shots and not long_["truncated"]
        assert huge["shots"] == 0 and huge["truncated"] and huge["tokens"] == 511
        assert r["subjects"]["agronomy"]["truncated"] == 1
        assert sum(r["subjects"]["agronomy"]["shots"].values()) == 3
    # The truncated prompt keeps its start (BOS + header) and its end (the answer cue): scored
    # from the first 255 and the last 256 tokens of the 0-shot prompt, computed here by hand.
    tok = tokenizer()
    ids = tok(
        "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
        + "巨" * 1200
        + "\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案："
    )["input_ids"]
    cut = ids[:255] + ids[-256:]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model()(torch.tensor([cut])).logits[0, -1].float(), -1)
    hand = [max(logp[tok.convert_tokens_to_ids(p)] for p in (L, "▁" + L)).item() for L in "ABCD"]
    assert huge["first_token"]["scores"] == pytest.approx(hand, abs=1e-5)
    assert huge["first_token"]["pred"] == "ABCD"[max(range(4), key=hand.__getitem__)]


def test_bad_options_are_user_errors(zh_task, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--continuation text needs --mode loglik"):
        evaluate_mc(tiny_model(), tokenizer(), zh_task, McOptions(continuation="text"))
    with pytest.raises(UserError, match="unknown subject"):
        evaluate_mc(tiny_model(), tokenizer(), zh_task, McOptions(subjects=["nope"]))
    zh_task.subjects["agronomy"].shots, saved = [], zh_task.subjects["agronomy"].shots
    try:
        with pytest.raises(UserError, match="no few-shot examples .*; use --shots 0"):
            evaluate_mc(tiny_model(), tokenizer(), zh_task, McOptions(shots=3))
    finally:
        zh_task.subjects["agronomy"].shots = saved


def test_length_batches_bound_padding() -> None:
    from langgraft.eval.scorer import _length_batches

    lengths = [615, 300, 200, 130, 125, 120, 118, 110, 100]
    batches = _length_batches(lengths, batch_size=4)
    assert [j for b in batches for j in b] == list(range(len(lengths)))
    assert all(len(b) <= 4 for b in batches)
    for b in batches:  # no row is padded by more than a third of its batch width
        assert min(lengths[j] for j in b) >= 0.75 * lengths[b[0]]
    assert batches[0] == [0] and [3, 4, 5, 6] in batches


def test_length_batches_by_token_budget() -> None:
    from langgraft.eval.scorer import _length_batches, batch_token_budget

    lengths = [100] * 10 + [90] * 10
    # 350 tokens: three rows of width 100 fit, a fourth would make 400.
    batches = _length_batches(lengths, None, max_tokens=350)
    assert [len(b) for b in batches] == [3, 3, 3, 3, 3, 3, 2]  # row 9 (100) takes 10, 11 (90)
    assert [j for b in batches for j in b] == list(range(20))
    assert batch_token_budget(torch.device("cpu")) == 2048
    assert batch_token_budget(torch.device("cuda", 0)) == 32768


def test_probe_api_for_training_loops() -> None:
    from langgraft.eval import probe_mc

    task = load_task("cmmlu", CMMLU)
    accs = probe_mc(tiny_model(), tokenizer(), task, limit=2, subjects=["arts", "genetics"])
    assert set(accs) == {"first_token_acc", "first_token_acc/Humanities", "first_token_acc/STEM"}
    # Known answer: the official CMMLU prompt of each question scored by hand.
    tok, correct = tokenizer(), {}
    for name, display in (("arts", "艺术学"), ("genetics", "遗传学")):
        s = task.subjects[name]
        shots = "".join(
            f"{q.question}\n"
            + "".join(f"{L}. {t}\n" for L, t in zip("ABCD", q.options, strict=True))
            + f"答案：{'ABCD'[q.answer]}\n\n"
            for q in s.shots
        )
        for q in s.questions[:2]:
            body = (
                q.question
                + "\n"
                + "".join(f"{L}. {t}\n" for L, t in zip("ABCD", q.options, strict=True))
            )
            logp = _last_logprobs(
                f"以下是关于{display}的单项选择题，请直接给出正确答案的选项。\n\n{shots}{body}答案："
            )
            hand = [max(logp[tok.convert_tokens_to_ids(p)] for p in (L, "▁" + L)) for L in "ABCD"]
            correct.setdefault(name, []).append(max(range(4), key=hand.__getitem__) == q.answer)
    assert accs["first_token_acc/Humanities"] == sum(correct["arts"]) / 2
    assert accs["first_token_acc/STEM"] == sum(correct["genetics"]) / 2
    assert accs["first_token_acc"] == sum(correct["arts"] + correct["genetics"]) / 4


def test_limit_and_shots_must_be_meaningful(zh_task) -> None:
    # `--limit -1` used to slice off the last question of each subject.
    for opts, msg in (
        (McOptions(limit=-1), "--limit -1: must be >= 1"),
        (McOptions(limit=0), "--limit 0: must be >= 1"),
        (McOptions(shots=-2), "--shots -2: must be >= 0"),
        (McOptions(batch_size=0), "--batch-size 0"),
    ):
        with pytest.raises(UserError, match=msg):
            evaluate_mc(tiny_model(), tokenizer(), zh_task, opts)
