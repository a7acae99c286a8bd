"""TF-VAEGAN: "Latent Embedding Feedback and Discriminative Features for Zero-Shot Classification"
(Narayan, Gupta, Khan, Snoek, Shao, ECCV 2020; reference note ``docs/tfvaegan.md``).

A VAE-GAN on feature vectors (min-max scaled, statistics from trainval): an encoder E, a generator
G with a sigmoid output, a WGAN-GP critic D with an adaptive penalty weight, a semantic decoder Dec
that maps features back to attributes, and a feedback module Fb that feeds Dec's hidden state back
into G's hidden layer. Each iteration takes ``critic_iters`` critic (and decoder) steps, each on a
fresh uniform batch, then one E/G/Fb(/Dec) step on the last critic batch again, ``feedback_loops``
passes per epoch (the second with the feedback). The final classifiers train on [x, Dec(x),
Dec.hidden(x)]. SC-EGG's stage 3 is this iteration in its dense space: both run
:func:`zslfast.nn.vaegan.train_step` (SC-EGG with a fresh generator batch and its guidance head).
"""
from zslfast.config.settings import (GENERATIVE_CHECKS, Choice, Names, Section, expand_names, generative_settings,
                                     names_settings, vaegan_settings)
from zslfast.engine.generative import GenerativeMethod
from zslfast.engine.recipe import Stage
from zslfast.engine.resume import State
from zslfast.engine.samplers import CriticGroups, RandomBatches
from zslfast.eval.generative import conditional_synthesizer
from zslfast.nn.vaegan import VAEGAN, conditioning_attributes, decoder_inputs, train_step, \
    vaegan_optimizers

SETTINGS = Section(
    extends=("features", "attributes", "epochs", "batches", "evaluation", "validation"),
    attribute_norm=Choice("l2", "none"),
    gan=Section(**vaegan_settings()),
    **generative_settings(),
    not_released=Names(),
    checks=[*GENERATIVE_CHECKS(), names_settings("not_released", allow_all=True)],
)

# Settings of this implementation, not of the released scripts: never "not released".
IMPLEMENTATION_SETTINGS = {"validation", "attributes", "synth_ratio", "calibration", "classifier.init",
                           "classifier.zsl_outputs", "not_released", "eval_start", "eval_every"}


class TFVAEGAN(GenerativeMethod):
    name = "tfvaegan"
    settings = SETTINGS
    selected = "gan_epochs"
    test_cadence = (1, 1)     # the released code evaluates after every epoch
    independent = ("zsl",)    # and reports its best T1 and its best H independently

    def recipe(self, data, cfg, ctx, epochs):
        """One stage: the VAE-GAN's epochs, selected (:func:`zslfast.nn.vaegan.train_step`)."""
        q, device = cfg["gan"], ctx.device
        x, y = data.subset("trainval")
        with ctx.init_scope():
            gan = VAEGAN(data.feature_dim, data.attribute_dim, q["hidden"]).to(device)
        batches = RandomBatches(x.shape[0], cfg["batch_size"], ctx.rng("gan_batches", device))
        # ⌈N / B⌉ iterations per pass, ``feedback_loops`` passes per epoch, critic_iters batches each
        passes = CriticGroups(batches, q["feedback_loops"], -(-x.shape[0] // cfg["batch_size"]), q["critic_iters"])
        state = State({"lambda": q["lambda_gp"]})  # the adaptive GP weight carries across epochs: checkpointed
        att = conditioning_attributes(data.attributes, cfg["attribute_norm"]).to(device)
        step = train_step(gan, x, y, att, data.unseen_classes.to(device), q, ctx.rng("gan_noise", device), state,
                          generator_batch="last")
        yield Stage("tf-vaegan", modules=gan.networks(), optimizer=vaegan_optimizers(gan, q), batches=passes,
                    step=step, epochs=epochs, state=state, selected=True, evaluates=gan)
        gan.gp_lambda = state["lambda"]
        return gan

    def generation(self, model, data, config):
        """Synthetic features with the feedback weight ``a2``; classifiers on [x, Dec(x), Dec.hidden(x)]."""
        att = conditioning_attributes(data.attributes, config["attribute_norm"]).to(data.features.device)
        a2 = config["gan"]["a2"]
        return data, conditional_synthesizer(lambda z, a: model.generate(z, a, a2), att), model.augment

    def generator_networks(self, model):
        return model.generation_networks()

    def test_synthesizer(self, networks, record, device):
        """G with the feedback weight ``a2``, conditioned as in training."""
        cfg = record["config"]
        gan = VAEGAN.from_generation(networks, device)
        att = conditioning_attributes(record["classes"]["embeddings"], cfg["attribute_norm"]).to(device)
        return conditional_synthesizer(lambda z, a: gan.generate(z, a, cfg["gan"]["a2"]), att)

    def test_networks(self, model):
        return {"Dec": model.Dec}

    def classifier_inputs(self, networks, record, device):
        """Features [B, C] -> [x, Dec(x), Dec.hidden(x)]."""
        return decoder_inputs(networks["Dec"], device)

    def finish(self, model, data, config, ctx):
        return {"not_released": expand_names(config, config["not_released"], IMPLEMENTATION_SETTINGS),
                "gp_lambda_final": model.gp_lambda}
