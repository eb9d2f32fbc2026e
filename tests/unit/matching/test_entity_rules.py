"""Entity resolution rules: sector words down-weighted like trade filler, phones of mentions
without a country, and the best-candidate probability that accounts for competitors."""

import math

import msgspec
import numpy as np

from cases.matching import EntityRecord, Matcher, MatchModel, entity_job
from cases.matching.features import prepare_entity
from cases.matching.model import (
    calibrate_linkage,
    competitor_mass,
)
from cases.matching.normalise import normalise_org_name
from tests.unit.matching.tables import entity_model


def _matcher() -> Matcher[EntityRecord, object]:
    return Matcher(entity_job(), entity_model())  # type: ignore[arg-type]


def _agency(id_: str, name: str, **kwargs: object) -> EntityRecord:
    return msgspec.convert(
        {"id": id_, "kind": "agency", "legal_name": name, **kwargs}, EntityRecord
    )


def test_sector_words_are_filler_in_english_and_indonesian() -> None:
    assert normalise_org_name("PT Kencana Tenaga Kerja").significant == ("kencana",)
    assert normalise_org_name("Bidda Trading & Contracting W.L.L.").significant == ("bidda",)
    assert normalise_org_name("Samut Seafood Co., Ltd.").core == "samut"
    # Kept in the name: two agencies differing only in sector words are still told apart.
    left, right = normalise_org_name("Putra Plantation"), normalise_org_name("Putra Manufacturing")
    assert left.compact != right.compact


def test_mention_phone_in_national_format_without_country_links_to_the_registry() -> None:
    matcher = _matcher()
    registry = [
        _agency("e1", "Buriram Mekong Co., Ltd.", country="TH", phones=["+66 81 214 8693"]),
        _agency("e2", "Buriram Mekong Trading Co., Ltd.", country="TH", phones=["+6681999000"]),
    ]
    mention = EntityRecord(
        id="m", kind="mention", legal_name="BURIRAM MEKONG TRADING", phones=("0812148693",)
    )
    assert prepare_entity(mention).phones  # kept as subscriber digits, not dropped
    best = matcher.match_one(mention, matcher.build_index(registry))
    assert best[0].id == "e1"
    levels = {f.field: f.level for f in matcher.explain(mention, registry[0]).fields}
    assert levels["phone"] == "same_subscriber"


def test_two_equally_good_registry_entries_split_the_probability() -> None:
    model = _matcher().model
    alone = model.link_probability(12.0, [-8.0])
    contested = model.link_probability(12.0, [12.0])
    assert alone > 0.95
    assert contested < 0.5
    assert math.isclose(competitor_mass([]), 0.0)
    # A hopeless extra candidate adds nothing; a second plausible one adds about a bit.
    assert math.isclose(competitor_mass([10.0]), competitor_mass([10.0, -30.0]), abs_tol=1e-6)
    assert math.isclose(competitor_mass([10.0, 10.0]), 11.0, abs_tol=0.01)


def test_an_exact_name_shared_by_two_registry_entries_goes_to_review() -> None:
    matcher = _matcher()
    registry = [
        _agency("e1", "Everest Overseas Pvt Ltd", country="NP"),
        _agency("e2", "Everest Overseas Private Limited", country="NP"),
        _agency("e3", "Sagarmatha Kantipur Manpower Pvt Ltd", country="NP"),
    ]
    index = matcher.build_index(registry)
    ambiguous = matcher.match_one(
        EntityRecord(id="m1", kind="mention", legal_name="Everest Overseas", country="NP"), index
    )
    assert ambiguous[0].decision == "review"
    clear = matcher.match_one(
        EntityRecord(id="m2", kind="mention", legal_name="SAGARMATHA KANTIPUR MANPOWER"), index
    )
    assert clear[0].id == "e3"
    assert clear[0].decision == "link"


def test_linkage_calibration_learns_that_competitors_lower_the_probability() -> None:
    rng = np.random.default_rng(3)
    best = rng.normal(10, 4, 4000)
    rivals = np.maximum(rng.normal(2, 4, 4000), 0)
    truth = 1 / (1 + 2 ** -(0.8 * best - 0.9 * rivals - 3))
    labels = (rng.random(4000) < truth).tolist()
    fitted = calibrate_linkage(_matcher().model, best.tolist(), rivals.tolist(), labels)
    assert fitted.linkage is not None
    assert abs(fitted.linkage.best - 0.8) < 0.15
    assert abs(fitted.linkage.competitors + 0.9) < 0.15
    assert msgspec.json.decode(msgspec.json.encode(fitted), type=MatchModel) == fitted


def test_fit_with_labels_calibrates_the_best_candidate_of_a_linkage() -> None:
    words = "Everest Sagarmatha Kantipur Lumbini Annapurna Gorkha Janakpur Pokhara Makalu Koshi"
    fillers = ("Overseas", "Manpower", "Human Resources")
    registry = [
        _agency(f"e{i}-{j}", f"{word} {filler} Pvt Ltd", country="NP")
        for i, word in enumerate(words.split())
        for j, filler in enumerate(fillers)
    ]
    mentions, truth = [], {}
    for k, entity in enumerate(registry):
        # Half the mentions drop the filler word: ambiguous between three siblings.
        name = entity.legal_name.split()[0] if k % 2 else entity.legal_name.upper()
        mentions.append(EntityRecord(id=f"m{k}", kind="mention", legal_name=name))
        truth[f"m{k}"] = entity.id
    matcher = Matcher(entity_job()).fit(
        mentions, against=registry, same=lambda m, e: truth.get(m) == e, random_pairs=2000
    )
    assert matcher.model.choice is not None
    index = matcher.build_index(registry)
    clear = matcher.match_one(
        EntityRecord(id="q1", kind="mention", legal_name="KOSHI HUMAN RESOURCES"), index
    )[0]
    vague = matcher.match_one(EntityRecord(id="q2", kind="mention", legal_name="Koshi"), index)[0]
    assert clear.id == "e9-2"
    assert clear.probability > vague.probability
    assert vague.decision != "link"


def test_registry_siblings_told_apart_by_trade_words() -> None:
    matcher = _matcher()
    registry = [
        _agency("e1", "Sabari Human Resources Pvt Ltd", country="IN"),
        _agency("e2", "Sabari Consultants Pvt Ltd", country="IN"),
        _agency("e3", "Sagarmatha Kantipur Manpower Pvt Ltd", country="NP"),
    ]
    index = matcher.build_index(registry)
    written = EntityRecord(id="m1", kind="mention", legal_name="SABARI HUMAN RESOURCES")
    levels = [
        {f.field: f.level for f in matcher.explain(written, entity, index).fields}["name"]
        for entity in registry[:2]
    ]
    # Other trade words count against the sibling more than trade words left out would.
    assert levels == ["exact", "other_trade"]
    clear = matcher.match_one(written, index)[0]
    assert (clear.id, clear.decision) == ("e1", "link")
    # Without its trade words the name fits both siblings equally: no auto-link.
    bare = matcher.match_one(EntityRecord(id="m2", kind="mention", legal_name="Sabari"), index)
    assert {c.id for c in bare[:2]} == {"e1", "e2"}
    assert math.isclose(bare[0].total_weight, bare[1].total_weight)
    assert bare[0].decision != "link"


def test_a_misspelt_legal_form_still_gives_an_exact_name() -> None:
    matcher = _matcher()
    registry = [_agency("e1", "Sagarmatha Kantipur Manpower Pvt Ltd", country="NP")]
    mention = EntityRecord(
        id="m", kind="mention", legal_name="Sagarmatha Kantipur Manpowr Pvt Limted"
    )
    levels = {f.field: f.level for f in matcher.explain(mention, registry[0]).fields}
    assert (levels["name"], levels["legal_form"]) == ("exact", "equal")


def test_a_typo_in_a_legal_form_of_several_words_is_still_the_form() -> None:
    for written, tokens in [
        ("Jama Wihu Recruitment gvt. Ltd.", ("jama", "wihu", "recruitment")),
        ("Bora Ludasu Pv Ltd", ("bora", "ludasu")),
        ("Budo Overseas Pirvate Limited", ("budo", "overseas")),
        ("Soinja Ashirwad aPvt. Ltd.", ("soinja", "ashirwad")),
    ]:
        name = normalise_org_name(written)
        assert (name.tokens, name.legal_form) == (tokens, "pvt ltd"), written
    assert normalise_org_name("Thai Cmpany Limited").legal_form == "co ltd"
    # Short words before a one-word form stay words: they may be the name itself.
    assert normalise_org_name("Kathmandu Po Ltd").tokens == ("kathmandu", "po")
    assert normalise_org_name("Siam Go Ltd").tokens == ("siam", "go")
