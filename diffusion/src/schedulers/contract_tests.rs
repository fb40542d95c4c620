//! Schedulers used against their contract return `Error::Scheduler` instead of panicking: a
//! step before `set_timesteps`, a timestep off the schedule, a step after the last, a model
//! output of another shape. One test per scheduler family.

use tch::{Device, Kind, Tensor};

use super::{GlobalNoise, Scheduler, SchedulerConfig, SchedulerKind, build_scheduler};
use crate::Error;

fn scheduler(kind: SchedulerKind) -> Box<dyn Scheduler> {
    build_scheduler(&SchedulerConfig::default(), Some(kind)).expect("default config builds")
}

fn latents() -> Tensor {
    Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu))
}

/// `result` is a scheduler error of `name` whose message contains `needle`.
fn assert_scheduler_err(result: crate::Result<Tensor>, name: &str, needle: &str) {
    match result {
        Err(Error::Scheduler { scheduler, message }) => {
            assert_eq!(scheduler, name);
            assert!(
                message.contains(needle),
                "{name}: {message:?} lacks {needle:?}"
            );
        }
        Err(other) => panic!("{name}: expected a scheduler error, got {other}"),
        Ok(_) => panic!("{name}: expected an error containing {needle:?}, got a tensor"),
    }
}

/// A step at `timestep` on a fresh scheduler of `kind` with 10 steps set.
fn step_at(kind: SchedulerKind, timestep: f64) -> crate::Result<Tensor> {
    let mut s = scheduler(kind);
    s.set_timesteps(10).expect("10 steps");
    s.step(&latents(), timestep, &latents(), &mut GlobalNoise)
}

#[test]
fn ddim_refuses_steps_before_set_timesteps_and_timesteps_off_the_training_range() {
    let mut s = scheduler(SchedulerKind::Ddim);
    let before = s.step(&latents(), 981.0, &latents(), &mut GlobalNoise);
    assert_scheduler_err(before, "DDIMScheduler", "set_timesteps");
    // DDIM reads ᾱ straight from the timestep, so only the training range bounds it.
    assert_scheduler_err(
        step_at(SchedulerKind::Ddim, 5000.0),
        "DDIMScheduler",
        "outside the training range",
    );
    assert_scheduler_err(
        step_at(SchedulerKind::Ddim, f64::NAN),
        "DDIMScheduler",
        "outside the training range",
    );
    let mut s = scheduler(SchedulerKind::Ddim);
    s.set_timesteps(10).expect("10 steps");
    assert_scheduler_err(
        s.add_noise(&latents(), &latents(), -3.0),
        "DDIMScheduler",
        "outside the training range",
    );
}

#[test]
fn ddpm_and_lcm_refuse_timesteps_off_their_schedule() {
    for (kind, name) in [
        (SchedulerKind::Ddpm, "DDPMScheduler"),
        (SchedulerKind::Lcm, "LCMScheduler"),
    ] {
        let mut s = scheduler(kind);
        let before = s.step(&latents(), 999.0, &latents(), &mut GlobalNoise);
        assert_scheduler_err(before, name, "set_timesteps");
        assert_scheduler_err(step_at(kind, 123.5), name, "not one of the schedule's");
    }
}

#[test]
fn euler_schedulers_refuse_unknown_timesteps_in_every_call() {
    for (kind, name) in [
        (SchedulerKind::Euler, "EulerDiscreteScheduler"),
        (
            SchedulerKind::EulerAncestral,
            "EulerAncestralDiscreteScheduler",
        ),
    ] {
        let mut s = scheduler(kind);
        s.set_timesteps(10).expect("10 steps");
        let unknown = 12.25;
        assert_scheduler_err(s.scale_model_input(&latents(), unknown), name, "not one of");
        assert_scheduler_err(
            s.step(&latents(), unknown, &latents(), &mut GlobalNoise),
            name,
            "not one of",
        );
        assert_scheduler_err(
            s.add_noise(&latents(), &latents(), unknown),
            name,
            "not one of",
        );
        // A begin index past the end is refused too, not an out-of-bounds index.
        s.set_begin_index(11);
        let t = s.timesteps()[0];
        assert_scheduler_err(s.scale_model_input(&latents(), t), name, "past the end");
    }
}

#[test]
fn multistep_schedulers_refuse_steps_outside_the_schedule() {
    for (kind, name) in [
        (
            SchedulerKind::DpmSolverMultistep { karras: false },
            "DPMSolverMultistepScheduler",
        ),
        (SchedulerKind::UniPc, "UniPCMultistepScheduler"),
    ] {
        let mut s = scheduler(kind);
        let before = s.step(&latents(), 999.0, &latents(), &mut GlobalNoise);
        assert_scheduler_err(before, name, "set_timesteps");
        // diffusers maps an unknown timestep to the last step; one step more is the error.
        let mut s = scheduler(kind);
        s.set_timesteps(2).expect("2 steps");
        let timesteps = s.timesteps().to_vec();
        let mut x = latents();
        for &t in &timesteps {
            x = s
                .step(&latents(), t, &x, &mut GlobalNoise)
                .expect("in the schedule");
        }
        assert_scheduler_err(
            s.step(&latents(), 0.0, &x, &mut GlobalNoise),
            name,
            "past the end",
        );
    }
}

#[test]
fn a_model_output_of_another_shape_is_an_error() {
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::UniPc,
    ] {
        let mut s = scheduler(kind);
        s.set_timesteps(10).expect("10 steps");
        let t = s.timesteps()[0];
        let wide = Tensor::zeros([1, 8, 8, 8], (Kind::Float, Device::Cpu));
        let name = s.name();
        assert_scheduler_err(
            s.step(&wide, t, &latents(), &mut GlobalNoise),
            name,
            "shape",
        );
    }
}
