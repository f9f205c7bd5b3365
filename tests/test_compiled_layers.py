"""The compiled layers (studio/training/compiled_layers.py): when they are used, and that they compute what the eager
layers do and are eager again once training ends."""
import pytest
import torch

from studio.training.compiled_layers import compiled_layers_callback, compiles


def test_only_supervised_runs_on_one_gpu_that_keep_activations_compile_and_an_administrator_can_turn_it_off(
        monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compiles("sft", 1, checkpointing=False)
    assert not compiles("dpo", 1, False) and not compiles("sft", 2, False) and not compiles("sft", 1, True)
    monkeypatch.setenv("STUDIO_COMPILE", "0")
    assert not compiles("sft", 1, False)
    monkeypatch.delenv("STUDIO_COMPILE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not compiles("sft", 1, False)


def test_compiled_layers_give_the_eager_loss_and_gradients_and_are_eager_again_after_training():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    ids = torch.randint(0, 100, (1, 12))

    def loss_and_gradient():
        model.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.item(), model.model.layers[0].mlp.up_proj.weight.grad.clone()

    eager = loss_and_gradient()
    callback = compiled_layers_callback(backend="aot_eager")  # traced forward and backward, without inductor's build
    callback.on_train_begin(None, None, None, model=model)
    layers = callback.layers
    assert len(layers) == 2 and all(layer._compiled_call_impl is not None for layer in layers)
    compiled = loss_and_gradient()
    callback.on_train_end(None, None, None)
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5)
    assert torch.allclose(compiled[1], eager[1], atol=1e-6, rtol=1e-4)
    assert all(layer._compiled_call_impl is None for layer in layers)
