"""Every lesson step that claims something about the model holds on each embedded causal model.

A claim is what a step's text tells the class ("an induction head looks from a token to the one that
followed its earlier copy", "entropy rises with T"); the panel checks it live, and here it must hold on
SmolLM2 and Gemma-3 with the step's own example. The numbers behind each claim (entropy, perplexity,
attention statistics, the lens, attribution) are tested against independent computations in their own
test files.
"""

import pytest

from lmviz.app import lessons, settings

CLAIMS = [(lesson, index) for lesson in lessons.LESSONS for index, step in enumerate(lesson.steps, start=1)
          if step.claim is not None]


@pytest.mark.parametrize("model", ["smollm", "gemma"])
@pytest.mark.parametrize("lesson, index", CLAIMS, ids=[f"{lesson.id}-{index}" for lesson, index in CLAIMS])
def test_every_claim_holds_on_each_embedded_causal_model(request, model, lesson, index):
    lm = request.getfixturevalue(model)
    step = lesson.steps[index - 1]
    assert step.needs == "causal"
    if step.model is not None and step.model != lm.name:
        pytest.skip(f"the step switches to {step.model}")  # e.g. the embedded SAE reads SmolLM2 only
    claim = step.claim(lm, lessons.example(lesson, index))
    assert claim.holds, f"{lm.name}: {claim.text}"


def test_claims_can_fail(smollm):
    """A claim is a measurement, not a caption: on a text that repeats nothing, no head reaches the
    induction step's floor, and the panel would say so."""
    claim = lessons.strongest_head("induction", 0.4)(smollm, "Quick brown foxes leap.")
    assert not claim.holds and "needs ≥ 0.4" in claim.text


PAGE_LIMITS = {settings.Features.LATENT: 4607}  # … the embedded SAE's last latent


def test_every_step_sets_up_its_own_example():
    for lesson in lessons.LESSONS:
        for index, step in enumerate(lesson.steps, start=1):
            params = lessons.step_params(lesson, index)
            assert params["text"] == (step.example or lesson.example) != ""
            if step.needs != "causal":
                assert params["model"] == step.model  # a masked-LM step switches to one (AntiBERTy)
            for setting, value in step.params.items():  # every value is one its page takes back from the URL
                expected = 30 if value is settings.LAST else value
                high = PAGE_LIMITS.get(setting, 30)  # what the page passes: SmolLM2's 30 layers, or …
                assert setting.parse(params[setting.key], high=high) == expected


def test_a_value_the_page_would_drop_is_refused_when_the_lesson_is_made():
    with pytest.raises(ValueError, match="sampling_temperature"):
        lessons.Step("Too hot", lessons.pages.SAMPLING, "…", {settings.Sampling.TEMPERATURE: 9.0})
